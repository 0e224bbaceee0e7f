package datalink

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// countingBroker answers count requests with the length of the key's queue, or 404.
type countingBroker struct{ *fakeBroker }

func (cb countingBroker) Count(_ string, key string) (int, error) {
	if key == "missing" {
		return 0, &RemoteError{Code: 404, Text: "no such key"}
	}
	ready, _ := cb.counts(key)
	return ready, nil
}

func TestCount(t *testing.T) {
	fb := newFakeBroker("q")
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), countingBroker{fb})
	if err != nil {
		t.Fatal(err)
	}
	p := Dial(srv.Addr(), testConfig("client"), newRecorder())
	t.Cleanup(func() {
		_ = p.Close()
		_ = srv.Close()
	})
	eventually(t, "link up", 5*time.Second, p.Up)
	ctx := context.Background()
	publishN(t, p, "q", 4)
	if n, err := p.Count(ctx, "q"); n != 4 || err != nil {
		t.Fatalf("count = %d, %v; want 4", n, err)
	}
	var re *RemoteError
	if _, err := p.Count(ctx, "missing"); !errors.As(err, &re) || re.Code != 404 {
		t.Fatalf("count of a missing key: %v, want a 404 remote error", err)
	}
	// The link keeps working after a refused count.
	if n, err := p.Count(ctx, "q"); n != 4 || err != nil {
		t.Fatalf("count after a refusal = %d, %v; want 4", n, err)
	}
}

func TestCountWithoutCounter(t *testing.T) {
	_, p := pair(t, newFakeBroker("q"), newRecorder())
	if _, err := p.Count(context.Background(), "q"); err == nil || !strings.Contains(err.Error(), "does not answer count") {
		t.Fatalf("count against a handler without Counter: %v", err)
	}
}
