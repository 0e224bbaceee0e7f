package rpc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkCall measures Go client → Go server calls against the first
// broker of WARREN_TEST_BROKERS, with 1 and 16 concurrent callers, and
// reports calls/s and the p50/p99 latency of a call.
func BenchmarkCall(b *testing.B) {
	broker := testBrokers()[0]
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			serverTr := newTestTransport(b, broker)
			clientTr := newTestTransport(b, broker)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := clientTr.Connect(ctx); err != nil {
				b.Fatalf("broker %s unreachable: %v", redactURL(broker), err)
			}
			topic := uniqueName("bench")
			endpoint, err := NewEndpoint("", "", &testEndpoint{server: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			srv, err := NewServer(serverTr, Target{Topic: topic, Server: "bench"}, []*Endpoint{endpoint}, ServerOptions{Workers: 32})
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.Start(ctx); err != nil {
				b.Fatalf("start server: %v", err)
			}
			defer srv.Stop()
			client := NewClient(clientTr, Target{Topic: topic})
			client.Timeout = 30 * time.Second
			// Warm up: reply queue, publisher channels, exchange declarations.
			if _, err := client.Call(ctx, "add", addArgs{A: 1, B: 1}); err != nil {
				b.Fatalf("warm-up call: %v", err)
			}

			latencies := make([][]time.Duration, callers)
			var failed sync.Once
			var firstErr error
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for c := 0; c < callers; c++ {
				n := b.N / callers
				if c < b.N%callers {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make([]time.Duration, 0, n)
					for i := 0; i < n; i++ {
						t0 := time.Now()
						if _, err := client.CallRaw(ctx, "add", addArgs{A: i, B: c}); err != nil {
							failed.Do(func() { firstErr = err })
							return
						}
						mine = append(mine, time.Since(t0))
					}
					latencies[c] = mine
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if firstErr != nil {
				b.Fatalf("call: %v", firstErr)
			}
			all := slices.Concat(latencies...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "calls/s")
			b.ReportMetric(float64(all[len(all)*50/100].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(all[min(len(all)*99/100, len(all)-1)].Microseconds())/1000, "p99_ms")
		})
	}
}
