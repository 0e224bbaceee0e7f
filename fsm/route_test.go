package fsm

import (
	"errors"
	"strconv"
	"testing"

	"github.com/warrenmq/warren/exchange"
)

func TestRouteDepthLimit(t *testing.T) {
	h := chainHarness(t, MaxRouteDepth+2)
	// MaxRouteDepth hops from x1 reach the last exchange, and its queue.
	if got := h.route("x1", "", nil); len(got) != 1 || got[0] != "end" {
		t.Fatalf("route from x1 = %v, want [end]", got)
	}
	_, err := h.f.Route("/", "x0", "", nil, nil)
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != CodePreconditionFailed {
		t.Fatalf("route one hop too deep: %v, want 406", err)
	}
}

func TestRouteExchangeCountLimit(t *testing.T) {
	h := newHarness(t)
	h.exch("root", "fanout")
	h.queue("q")
	for i := range MaxRouteExchanges {
		x := "w" + strconv.Itoa(i)
		h.exch(x, "fanout")
		h.bindX("root", x, "")
		h.bindQ(x, "q", "")
	}
	_, err := h.f.Route("/", "root", "", nil, nil)
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != CodePreconditionFailed {
		t.Fatalf("route through %d exchanges: %v, want 406", MaxRouteExchanges+1, err)
	}
	h.ok(Unbind{Vhost: "/", Source: "root", Dest: exchange.Dest{Name: "w0", IsExchange: true}, Key: ""})
	if got := h.route("root", "", nil); len(got) != 1 || got[0] != "q" {
		t.Fatalf("route through %d exchanges = %v, want [q] once", MaxRouteExchanges, got)
	}
}

// TestRouteCyclesAndDiamonds: every exchange is routed through once, however many paths reach
// it, and a cycle ends.
func TestRouteCyclesAndDiamonds(t *testing.T) {
	h := newHarness(t)
	for _, x := range []string{"a", "b", "c", "d"} {
		h.exch(x, "fanout")
	}
	h.queue("q")
	h.bindX("a", "b", "")
	h.bindX("a", "c", "")
	h.bindX("b", "d", "")
	h.bindX("c", "d", "")
	h.bindX("d", "a", "") // cycle back to the start
	h.bindQ("d", "q", "")
	if got := h.route("a", "", nil); len(got) != 1 || got[0] != "q" {
		t.Fatalf("route = %v, want [q]", got)
	}
}
