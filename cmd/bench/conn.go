package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// closeTimeout bounds connection.close: a broker that stopped reading the socket (flow control,
// or a hung broker) must not hang the benchmark, and a deadline on the socket also frees a
// publisher goroutine stuck in a blocked write.
const closeTimeout = 5 * time.Second

// defaultHandshakeTimeout matches amqp091-go's own default for Dial.
const defaultHandshakeTimeout = 30 * time.Second

// runNames hands out queue and exchange names unique to one run, so runs never collide with each
// other, with another engineer's tests on the same broker, or with leftovers of a killed run.
type runNames struct {
	prefix string
	mu     sync.Mutex
	next   int
	issued []issuedName
}

// issuedName remembers what kind of object a name was made for.
type issuedName struct {
	kind, name string
}

func newRunNames(workload string) *runNames {
	var random [4]byte
	if _, err := rand.Read(random[:]); err != nil {
		// crypto/rand does not fail on Linux; the clock still keeps names apart if it ever does.
		return &runNames{prefix: fmt.Sprintf("bench-%s-%x", workload, time.Now().UnixNano())}
	}
	return &runNames{prefix: fmt.Sprintf("bench-%s-%s", workload, hex.EncodeToString(random[:]))}
}

func (n *runNames) name(kind string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	name := fmt.Sprintf("%s-%s-%d", n.prefix, kind, n.next)
	n.issued = append(n.issued, issuedName{kind: kind, name: name})
	return name
}

// all returns every name handed out so far.
func (n *runNames) all() []issuedName {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]issuedName(nil), n.issued...)
}

// clientTLS verifies amqps:// brokers (-tls-ca); nil trusts the system's roots.
var clientTLS *tls.Config

func loadClientTLS(caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("-tls-ca: no PEM certificate in %s", caFile)
	}
	clientTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return nil
}

// dial opens a connection named after its role, which shows up in the broker's connection list
// and makes a stuck benchmark easy to tell apart.
func dial(ctx context.Context, brokerURL, role string, handshakeTimeout time.Duration) (*amqp.Connection, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dialling %s connection: %w", role, err)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("warren-bench " + role)
	conn, err := amqp.DialConfig(brokerURL, amqp.Config{
		Properties:      props,
		Dial:            amqp.DefaultDial(handshakeTimeout),
		TLSClientConfig: clientTLS,
	})
	if err != nil {
		return nil, fmt.Errorf("dialling %s connection: %w", role, err)
	}
	return conn, nil
}

// openChannel dials a connection and opens one channel on it.
func openChannel(ctx context.Context, brokerURL, role string) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := dial(ctx, brokerURL, role, defaultHandshakeTimeout)
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		closeConnection(conn, role)
		return nil, nil, fmt.Errorf("opening %s channel: %w", role, err)
	}
	return conn, ch, nil
}

// closeConnection closes politely with a deadline; failures are only logged because by then the
// figures are already measured.
func closeConnection(conn *amqp.Connection, role string) {
	if conn == nil || conn.IsClosed() {
		return
	}
	if err := conn.CloseDeadline(time.Now().Add(closeTimeout)); err != nil && !errors.Is(err, amqp.ErrClosed) {
		slog.Warn("closing connection", "role", role, "err", err)
	}
}

// createdTopology records what a workload actually declared, so cleanup deletes exactly that and
// a run that never reached the broker does not add cleanup failures to its real error.
type createdTopology struct {
	mu        sync.Mutex
	queues    []string
	exchanges []string
}

func (c *createdTopology) addQueue(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queues = append(c.queues, name)
}

func (c *createdTopology) addExchange(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exchanges = append(c.exchanges, name)
}

// cleanup deletes everything recorded and joins any failure onto err.
func (c *createdTopology) cleanup(brokerURL string, err *error) {
	c.mu.Lock()
	queues, exchanges := c.queues, c.exchanges
	c.queues, c.exchanges = nil, nil
	c.mu.Unlock()
	if cleanupErr := deleteTopology(brokerURL, queues, exchanges); cleanupErr != nil {
		*err = errors.Join(*err, cleanupErr)
	}
}

// fenceEvery bounds how many pipelined (no-wait) deletes are outstanding before a synchronous
// call confirms the broker has processed them all; methods on one channel are handled in order.
const fenceEvery = 500

// deleteTopology removes the queues and exchanges a workload created. It uses a fresh connection
// so that cleanup works even when the workload's own connections were closed by an error.
// Deletes are pipelined with no-wait so removing tens of thousands of queues does not take as
// long as declaring them; if the broker rejects that, it falls back to one synchronous delete at
// a time.
func deleteTopology(brokerURL string, queues, exchanges []string) error {
	if len(queues) == 0 && len(exchanges) == 0 {
		return nil
	}
	// Cleanup must run even when the workload's context has expired.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, ch, err := openChannel(ctx, brokerURL, "cleanup")
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer closeConnection(conn, "cleanup")

	if err := pipelinedQueueDelete(ch, queues); err != nil {
		slog.Warn("pipelined queue delete failed; deleting one at a time", "err", err)
		if ch, err = conn.Channel(); err != nil {
			return fmt.Errorf("cleanup: reopening channel: %w", err)
		}
		for _, q := range queues {
			if ctx.Err() != nil {
				return fmt.Errorf("cleanup: deleting queues: %w", ctx.Err())
			}
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				return fmt.Errorf("cleanup: deleting queue %s: %w", q, err)
			}
		}
	}
	for _, x := range exchanges {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			return fmt.Errorf("cleanup: deleting exchange %s: %w", x, err)
		}
	}
	return nil
}

func pipelinedQueueDelete(ch *amqp.Channel, queues []string) error {
	for i, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, true); err != nil {
			return fmt.Errorf("deleting queue %s: %w", q, err)
		}
		if (i+1)%fenceEvery == 0 || i == len(queues)-1 {
			// A passive declare of a built-in exchange is a cheap synchronous round trip.
			if err := ch.ExchangeDeclarePassive("amq.direct", "direct", true, false, false, false, nil); err != nil {
				return fmt.Errorf("waiting for queue deletes: %w", err)
			}
		}
	}
	return nil
}
