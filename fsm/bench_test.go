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
