package broker

import (
	"fmt"
	"strconv"

	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// InvalidExpirationError is a publish whose expiration property is not a non-negative integer
// (RabbitMQ refuses it with 406 PRECONDITION_FAILED).
type InvalidExpirationError struct{ Value string }

func (e *InvalidExpirationError) Error() string {
	return fmt.Sprintf("invalid expiration '%s'", e.Value)
}

// FillFromProps sets the fields queues act on (persistence, priority, per-message TTL) from
// m.Props without decoding the headers table, and returns the raw headers table (nil if absent).
func FillFromProps(m *queue.Message) (rawHeaders []byte, err error) {
	sum, err := wire.ScanProperties(m.Props)
	if err != nil {
		return nil, err
	}
	m.Persistent = sum.DeliveryMode == 2
	m.Priority = sum.Priority
	m.ExpirationMs = -1
	if sum.HasExpiration {
		ms, err := strconv.ParseInt(string(sum.Expiration), 10, 64)
		if err != nil || ms < 0 {
			return nil, &InvalidExpirationError{Value: string(sum.Expiration)}
		}
		m.ExpirationMs = ms
	}
	return sum.Headers, nil
}
