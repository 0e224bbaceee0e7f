package rpc

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// defaultTestBroker is the reference RabbitMQ started by scripts/rabbitmq.sh.
const defaultTestBroker = "amqp://guest:guest@127.0.0.1:5682/"

// testBrokers lists the brokers of WARREN_TEST_BROKERS (comma-separated),
// or the reference RabbitMQ.
func testBrokers() []string {
	env := strings.TrimSpace(os.Getenv("WARREN_TEST_BROKERS"))
	if env == "" {
		return []string{defaultTestBroker}
	}
	var out []string
	for _, b := range strings.Split(env, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// brokerName is the subtest name of a broker: its host and port.
func brokerName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "broker"
	}
	return u.Host
}

// requireBroker fails the test when the broker cannot be reached: a listed
// broker that is down is a broken test setup, not a reason to skip.
func requireBroker(t *testing.T, brokerURL string) {
	t.Helper()
	tr, err := NewTransport(brokerURL, TransportOptions{Logger: testLogger})
	if err != nil {
		t.Fatalf("broker %s: %v", redactURL(brokerURL), err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tr.Connect(ctx); err != nil {
		t.Fatalf("broker %s listed for the rpc tests is unreachable (set WARREN_TEST_BROKERS or start scripts/rabbitmq.sh): %v", redactURL(brokerURL), err)
	}
}

// newTestTransport returns a Transport closed when the test ends.
func newTestTransport(t testing.TB, brokerURL string) *Transport {
	t.Helper()
	tr, err := NewTransport(brokerURL, TransportOptions{ControlExchange: "warren_rpc_test", Logger: testLogger})
	if err != nil {
		t.Fatalf("new transport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// testLogger keeps warnings (reconnects, dropped messages) and hides the
// per-connection info lines.
var testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

var nameCounter atomic.Int64

// uniqueName returns a topic or exchange name no other test uses.
func uniqueName(prefix string) string {
	return prefix + "_" + newHexID()[:10] + "_" + strconv.FormatInt(nameCounter.Add(1), 10)
}

// testContext is a context bounded so a broken broker cannot hang a test.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
