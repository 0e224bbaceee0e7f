package queue

import (
	"fmt"
	"testing"
)

// TestRoundRobinFairAfterRemovals removes consumers (including the one the cursor points at)
// between publishes: the rest still take turns in the order they subscribed.
func TestRoundRobinFairAfterRemovals(t *testing.T) {
	q := New(cfg(), Hooks{})
	defer q.Delete()
	cs := make([]*testConsumer, 5)
	for i := range cs {
		cs[i] = &testConsumer{credit: -1}
		if err := q.AddConsumer(cs[i], true, false); err != nil {
			t.Fatal(err)
		}
	}
	q.Publish(msg("0")) // to cs[0]; the cursor is on cs[1]
	q.RemoveConsumer(cs[1])
	q.RemoveConsumer(cs[3])
	for i := 1; i <= 6; i++ {
		q.Publish(msg(fmt.Sprint(i)))
	}
	want := map[int][]string{0: {"0", "3", "6"}, 2: {"1", "4"}, 4: {"2", "5"}}
	for i, c := range cs {
		if got := c.bodies(); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("consumer %d got %v, want %v", i, got, want[i])
		}
	}
	late := &testConsumer{credit: -1}
	if err := q.AddConsumer(late, true, false); err != nil {
		t.Fatal(err)
	}
	// The cursor is on cs[2]; a new consumer comes last in the round, just before it.
	for i := 7; i <= 10; i++ {
		q.Publish(msg(fmt.Sprint(i)))
	}
	if got := late.bodies(); fmt.Sprint(got) != "[10]" {
		t.Errorf("late consumer got %v, want [10]", got)
	}
}

// TestManyConsumersAddRemove registers 100k consumers and removes them in an order that made
// the old slice search-and-shift quadratic (oldest first), then checks the queue is consistent.
func TestManyConsumersAddRemove(t *testing.T) {
	const n = 100_000
	q := New(cfg(), Hooks{})
	defer q.Delete()
	cs := make([]*testConsumer, n)
	for i := range cs {
		cs[i] = &testConsumer{credit: -1}
		if err := q.AddConsumer(cs[i], true, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, c := q.Counts(); c != n {
		t.Fatalf("consumers = %d, want %d", c, n)
	}
	for i := 0; i < n-1; i++ {
		q.RemoveConsumer(cs[i])
	}
	q.RemoveConsumer(cs[0]) // twice: ignored
	if _, _, c := q.Counts(); c != 1 {
		t.Fatalf("consumers = %d, want 1", c)
	}
	q.Publish(msg("last"))
	if got := cs[n-1].bodies(); len(got) != 1 {
		t.Fatalf("remaining consumer got %v", got)
	}
}

func BenchmarkConsumerAddRemove(b *testing.B) {
	q := New(cfg(), Hooks{})
	defer q.Delete()
	const n = 10_000
	cs := make([]*testConsumer, n)
	for i := range cs {
		cs[i] = &testConsumer{credit: -1}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range cs {
			_ = q.AddConsumer(c, true, false)
		}
		for _, c := range cs {
			q.RemoveConsumer(c)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/consumer")
}
