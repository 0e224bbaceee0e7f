package datalink

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPublishAsync: 256-byte publishes over loopback to an owner that accepts at once,
// waiting for every reply.
func BenchmarkPublishAsync(b *testing.B) {
	fb := newFakeBroker()
	fb.queues["q"] = &fakeQueue{unacked: map[uint64]fakeUnacked{}}
	sink := &discardHandler{fakeBroker: fb}
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), sink)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	p := Dial(srv.Addr(), testConfig("client"), newRecorder())
	defer p.Close()
	eventually(b, "link up", 5*time.Second, p.Up)

	msg := make([]byte, 256)
	queues := []string{"q"}
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(rejected bool, err error) {
		if err != nil || rejected {
			failed.Add(1)
		}
		wg.Done()
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	wg.Add(b.N)
	for range b.N {
		p.PublishAsync(queues, msg, false, done)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed.Load() != 0 {
		b.Fatalf("%d publishes failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// discardHandler answers publishes at once without storing them, so the benchmark measures
// the link rather than the fake queue.
type discardHandler struct{ *fakeBroker }

func (discardHandler) Publish(_ string, _ []string, _ []byte, _ bool, reply func(bool, error)) {
	reply(false, nil)
}

// countingEvents counts deliveries for BenchmarkDeliver.
type countingEvents struct{ n atomic.Int64 }

func (c *countingEvents) Delivered(uint64, Delivery) { c.n.Add(1) }
func (c *countingEvents) ConsumerCancelled(uint64)   {}

// BenchmarkDeliver: 256-byte deliveries from the owner's Deliverer to the consumer's node,
// retrying when the link buffer is full as a queue would on its next credit.
func BenchmarkDeliver(b *testing.B) {
	fb := newFakeBroker("q")
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), fb)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ev := &countingEvents{}
	p := Dial(srv.Addr(), testConfig("client"), ev)
	defer p.Close()
	eventually(b, "link up", 5*time.Second, p.Up)
	if err := p.Consume(b.Context(), 1, "q", 0, true, false); err != nil {
		b.Fatal(err)
	}
	var out Deliverer
	fb.mu.Lock()
	out = fb.consumers[consumerKey{"client", 1}].out
	fb.mu.Unlock()

	msg := make([]byte, 256)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for !out.Deliver(Delivery{Seq: uint64(i), Msg: msg}) {
			runtime.Gosched()
		}
	}
	for ev.n.Load() < int64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
