package node_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/rpc"
)

// TestRPCCastsSpreadOverServersOnEveryNode: three Go rpc servers of one topic, each connected to
// a different node; 3,000 casts from a client on node 1 are shared fairly (±20%) among them,
// though the topic queue lives on one node.
func TestRPCCastsSpreadOverServersOnEveryNode(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var counts [3]atomic.Int64
	var total atomic.Int64
	for i, n := range nodes {
		tr, err := rpc.NewTransport("amqp://guest:guest@"+n.AMQPAddr()+"/", rpc.TransportOptions{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		ep := &rpc.Endpoint{Methods: map[string]rpc.Handler{
			"work": func(context.Context, json.RawMessage) (any, error) {
				counts[i].Add(1)
				total.Add(1)
				return nil, nil
			},
		}}
		srv, err := rpc.NewServer(tr, rpc.Target{Exchange: "lb_test", Topic: "lb", Server: n.Members.LocalID()}, []*rpc.Endpoint{ep}, rpc.ServerOptions{Prefetch: 10})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(ctx); err != nil {
			t.Fatalf("server on %s: %v", n.Members.LocalID(), err)
		}
		defer srv.Stop()
	}
	ctr, err := rpc.NewTransport("amqp://guest:guest@"+nodes[0].AMQPAddr()+"/", rpc.TransportOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Close()
	client := rpc.NewClient(ctr, rpc.Target{Exchange: "lb_test", Topic: "lb"})
	const casts = 3000
	for i := 0; i < casts; i++ {
		if err := client.Cast(ctx, "work", map[string]any{"i": i}); err != nil {
			t.Fatalf("cast %d: %v", i, err)
		}
	}
	for total.Load() < casts {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d casts handled", total.Load(), casts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range counts {
		if got := counts[i].Load(); got < casts/3*8/10 || got > casts/3*12/10 {
			t.Fatalf("server on c%d handled %d of %d casts; want within ±20%% of %d (all: %d %d %d)",
				i+1, got, casts, casts/3, counts[0].Load(), counts[1].Load(), counts[2].Load())
		}
	}
}
