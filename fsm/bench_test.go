package fsm

import (
	"strconv"
	"testing"

	"github.com/warrenmq/warren/exchange"
)

func BenchmarkRouteTopic10k(b *testing.B) {
	h := newHarness(b)
	h.exch("t", "topic")
	for i := range 10_000 {
		q := "q" + strconv.Itoa(i)
		h.queue(q)
		h.bindQ("t", q, "svc"+strconv.Itoa(i%500)+".host"+strconv.Itoa(i)+".#")
	}
	out := make([]QueueRef, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		out, err = h.f.Route("/", "t", "svc3.host3.event", nil, out[:0])
		if err != nil || len(out) != 1 {
			b.Fatalf("%v %v", out, err)
		}
	}
}

func BenchmarkApplyDeclareBind(b *testing.B) {
	h := newHarness(b)
	h.exch("t", "topic")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q := "q" + strconv.Itoa(i)
		h.index++
		if r := h.f.ApplyCommand(h.index, DeclareQueue{Vhost: "/", Name: q, Owner: "n1"}); r.Err != nil {
			b.Fatal(r.Err)
		}
		h.index++
		if r := h.f.ApplyCommand(h.index, Bind{Vhost: "/", Source: "t", Dest: exchange.Dest{Name: q}, Key: "a." + q + ".#"}); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// chainHarness builds x0 → x1 → … → x(n-1) → queue "end", all fanout exchanges.
func chainHarness(b testing.TB, n int) *harness {
	h := newHarness(b)
	for i := range n {
		h.exch("x"+strconv.Itoa(i), "fanout")
	}
	for i := 1; i < n; i++ {
		h.bindX("x"+strconv.Itoa(i-1), "x"+strconv.Itoa(i), "")
	}
	h.queue("end")
	h.bindQ("x"+strconv.Itoa(n-1), "end", "")
	return h
}

// BenchmarkRouteChain100k publishes into a chain of 100k exchange-to-exchange bindings: at its
// head (refused after MaxRouteDepth hops) and MaxRouteDepth hops before its end (routed). Either
// way the read lock is held for microseconds, not the seconds a full walk took.
func BenchmarkRouteChain100k(b *testing.B) {
	const n = 100_000
	h := chainHarness(b, n)
	out := make([]QueueRef, 0, 4)
	b.Run("head-refused", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h.f.Route("/", "x0", "", nil, out[:0]); err == nil {
				b.Fatal("routing through 100k exchanges was not refused")
			}
		}
	})
	b.Run("tail-routed", func(b *testing.B) {
		start := "x" + strconv.Itoa(n-MaxRouteDepth)
		b.ReportAllocs()
		for b.Loop() {
			var err error
			out, err = h.f.Route("/", start, "", nil, out[:0])
			if err != nil || len(out) != 1 {
				b.Fatalf("%v %v", out, err)
			}
		}
	})
}

// BenchmarkRouteWide100k publishes into an exchange bound to 100k exchanges: refused once
// MaxRouteExchanges are reached.
func BenchmarkRouteWide100k(b *testing.B) {
	h := newHarness(b)
	h.exch("root", "fanout")
	for i := range 100_000 {
		x := "w" + strconv.Itoa(i)
		h.exch(x, "fanout")
		h.bindX("root", x, "")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.f.Route("/", "root", "", nil, nil); err == nil {
			b.Fatal("routing through 100k exchanges was not refused")
		}
	}
}
