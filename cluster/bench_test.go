package cluster

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/warrenmq/warren/fsm"
)

// BenchmarkApply compares a write on the leader with one forwarded by a follower (which also
// waits for its own FSM to apply it), with parallel writers as a busy broker would have.
func BenchmarkApply(b *testing.B) {
	for _, where := range []string{"leader", "follower"} {
		b.Run(where, func(b *testing.B) {
			nodes := startCluster(b, []string{"b1", "b2", "b3"}, nodeOptions{})
			writer := leaderOf(nodes)
			if where == "follower" {
				writer = followersOf(nodes)[0]
			}
			var seq atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					name := fmt.Sprintf("b%d", seq.Add(1))
					cmd, _ := fsm.Encode(fsm.DeclareExchange{Vhost: "/", Name: name, Kind: "direct"})
					if _, err := writer.store.Apply(cmd); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
