package broker

import (
	"reflect"
	"testing"
	"time"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// TestQueueConfigFromDeclaredArgs follows a queue's arguments from the wire encoding the FSM
// stores, through the FSM's declare and fsm.QueueArgs, to the queue's runtime behaviour.
func TestQueueConfigFromDeclaredArgs(t *testing.T) {
	base := func(name string) queue.Config {
		return queue.Config{Vhost: "/", Name: name, MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1, DeliveryLimit: -1}
	}
	cases := []struct {
		name    string
		durable bool
		args    wire.Table
		want    func(c *queue.Config)
	}{
		{"plain", false, nil, func(*queue.Config) {}},
		{"classic", false, wire.Table{
			"x-message-ttl": int32(0), "x-expires": int64(1500), "x-max-length": int16(5),
			"x-max-length-bytes": int64(100), "x-max-priority": uint8(10), "x-overflow": "reject-publish",
			"x-dead-letter-exchange": "",
		}, func(c *queue.Config) {
			c.MessageTTL, c.Expires, c.MaxLength, c.MaxLengthBytes = 0, 1500*time.Millisecond, 5, 100
			c.MaxPriority, c.Overflow, c.DeadLetter = 10, queue.RejectPublish, true
		}},
		{"replicated", true, wire.Table{
			"x-queue-type": "quorum", "x-delivery-limit": int32(3), "x-overflow": "reject-publish-dlx",
			"x-dead-letter-exchange": "dlx",
		}, func(c *queue.Config) {
			c.CountReturns, c.DeliveryLimit, c.Overflow, c.DeadLetter = true, 3, queue.RejectPublishDLX, true
		}},
		{"replicated without a limit", true, wire.Table{"x-queue-type": "quorum"}, func(c *queue.Config) {
			c.CountReturns = true
		}},
	}
	f := fsm.New(fsm.Options{DecodeArgs: DecodeArgs})
	for i, c := range cases {
		var args []byte
		if len(c.args) > 0 {
			args = wire.AppendTable(nil, c.args)
		}
		res := f.ApplyCommand(uint64(i+1), fsm.DeclareQueue{Vhost: "/", Name: c.name, Durable: c.durable, Owner: "n1", Args: args})
		if res.Err != nil {
			t.Fatalf("%s: declare refused: %v", c.name, res.Err)
		}
		qa, refusal := f.QueueArgs(*res.Queue)
		if refusal != nil {
			t.Fatalf("%s: stored arguments refused: %v", c.name, refusal)
		}
		got := QueueConfig(*res.Queue, qa)
		if (got.Redelivering != nil) != got.CountReturns {
			t.Errorf("%s: Redelivering set %v, CountReturns %v", c.name, got.Redelivering != nil, got.CountReturns)
		}
		got.Redelivering = nil
		want := base(c.name)
		c.want(&want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, want)
		}
	}
}
