package main

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// These tests run every workload briefly against a real broker: BENCH_AMQP_URL, or the reference
// RabbitMQ that scripts/rabbitmq.sh starts on 5682. They check that each workload produces its
// figures and leaves nothing behind; they never judge the figures themselves.
func brokerURL(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a broker; skipped with -short")
	}
	raw := os.Getenv("BENCH_AMQP_URL")
	if raw == "" {
		raw = "amqp://guest:guest@127.0.0.1:5682/"
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("BENCH_AMQP_URL: %v", err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		t.Skipf("no broker at %s: %v", u.Redacted(), err)
	}
	conn.Close()
	return raw
}

func shortConfig(t *testing.T, workload string) config {
	args := []string{"-workload", workload, "-url", brokerURL(t), "-duration", "1s", "-settle", "0s"}
	if workload == "idle-conns" || workload == "empty-queues" {
		args = append(args, "-pid", strconv.Itoa(os.Getpid()))
	}
	cfg, _, err := parseFlags(args, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runAndCheckCleanup runs a workload and then asks the broker, passively, about every queue and
// exchange name the run handed out: each must be gone.
func runAndCheckCleanup(t *testing.T, cfg config) result {
	t.Helper()
	names := newRunNames(cfg.workload)
	res := runWorkloadNamed(context.Background(), cfg, names)
	if res.Error != "" {
		t.Fatalf("%s failed: %s", cfg.workload, res.Error)
	}
	issued := names.all()
	if len(issued) > 200 {
		// Checking a sample keeps the declare test short; names are all made and deleted alike.
		issued = append(issued[:100], issued[len(issued)-100:]...)
	}
	conn, err := amqp.Dial(cfg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, n := range issued {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if n.kind == "fanout" || n.kind == "direct" {
			err = ch.ExchangeDeclarePassive(n.name, n.kind, false, false, false, false, nil)
		} else {
			_, err = ch.QueueDeclarePassive(n.name, false, false, false, false, nil)
		}
		var amqpErr *amqp.Error
		if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.NotFound {
			t.Errorf("%s %s still exists after the run (passive declare: %v)", n.kind, n.name, err)
			ch.Close()
		}
	}
	return res
}

func requirePositive(t *testing.T, name string, v *float64) {
	t.Helper()
	if v == nil || *v <= 0 {
		t.Errorf("%s = %v, want a positive figure", name, v)
	}
}

func TestThroughputWorkloadsMeasureAndCleanUp(t *testing.T) {
	for _, workload := range []string{"1p1c", "1p1c-confirm", "fanout"} {
		t.Run(workload, func(t *testing.T) {
			cfg := shortConfig(t, workload)
			cfg.fanoutQueues = 3
			cfg.brokerPID = os.Getpid() // any live process exercises the RSS path
			res := runAndCheckCleanup(t, cfg)
			requirePositive(t, "msgs_per_sec", res.MsgsPerSec)
			requirePositive(t, "p50_us", res.P50Micros)
			requirePositive(t, "peak_rss_mb", res.PeakRSSMB)
			if *res.Delivered > *res.Published*int64(max(1, cfg.fanoutQueues)) {
				t.Errorf("delivered %d exceeds what was published (%d)", *res.Delivered, *res.Published)
			}
			if workload == "1p1c" && *res.Published-*res.Delivered > int64(cfg.publisherLead) {
				t.Errorf("publisher ran %d messages ahead of the consumer; the lead is %d",
					*res.Published-*res.Delivered, cfg.publisherLead)
			}
			if workload == "1p1c-confirm" {
				requirePositive(t, "confirm_p50_us", res.ConfirmP50Micros)
			}
		})
	}
}

func TestSlowConsumerBuildsABacklog(t *testing.T) {
	cfg := shortConfig(t, "slow-consumer")
	cfg.brokerPID = os.Getpid()
	res := runAndCheckCleanup(t, cfg)
	requirePositive(t, "final_rss_mb", res.FinalRSSMB)
	// A consumer that needs 1 ms per message cannot take more than ~1000/s.
	if res.MsgsPerSec == nil || *res.MsgsPerSec > 1100 {
		t.Errorf("slow consumer took %v msgs/s", res.MsgsPerSec)
	}
	if *res.Published <= *res.Delivered {
		t.Errorf("publisher (%d) did not outrun the slow consumer (%d)", *res.Published, *res.Delivered)
	}
}

func TestRPCAndDeclareMeasureAndCleanUp(t *testing.T) {
	for _, workload := range []string{"rpc", "declare"} {
		t.Run(workload, func(t *testing.T) {
			res := runAndCheckCleanup(t, shortConfig(t, workload))
			requirePositive(t, "ops_per_sec", res.OpsPerSec)
			requirePositive(t, "p99_us", res.P99Micros)
		})
	}
}

func TestMemoryWorkloadsReportDeltas(t *testing.T) {
	cfg := shortConfig(t, "idle-conns")
	cfg.brokerPID = os.Getpid()
	cfg.idleConns = 20
	res := runAndCheckCleanup(t, cfg)
	if res.ConnsOpened == nil || *res.ConnsOpened != 20 || res.RSSDeltaMBPer1kConns == nil {
		t.Errorf("idle-conns result %+v", res)
	}

	cfg = shortConfig(t, "empty-queues")
	cfg.brokerPID = os.Getpid()
	cfg.emptyQueues = 50
	res = runAndCheckCleanup(t, cfg)
	if res.QueuesDeclared == nil || *res.QueuesDeclared != 50 || res.RSSDeltaMBPer10kQ == nil {
		t.Errorf("empty-queues result %+v", res)
	}
}

func TestUnreachableBrokerIsAnErrorNotAHang(t *testing.T) {
	cfg, _, err := parseFlags([]string{"-workload", "1p1c", "-url", "amqp://guest:guest@127.0.0.1:1/", "-duration", "1s"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := runWorkload(context.Background(), cfg)
	if res.Error == "" {
		t.Fatal("no error against a closed port")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("took %v to fail", time.Since(start))
	}
}

// TestFailoverMeasuresTheFirstConfirmAfterTheKill runs failover with a kill command that kills
// nothing: the figure is then one confirm round trip, and the run must still clean up.
func TestFailoverMeasuresTheFirstConfirmAfterTheKill(t *testing.T) {
	cfg := shortConfig(t, "persistent")
	cfg.workload = "failover"
	cfg.killAfter = 300 * time.Millisecond
	cfg.failoverTimeout = 10 * time.Second
	cfg.killCmd = `echo "killed $(date +%s%N) nothing:"`
	res := runAndCheckCleanup(t, cfg)
	requirePositive(t, "failover_ms", res.FailoverMillis)
	requirePositive(t, "confirm_gap_ms", res.ConfirmGapMillis)
	// Nothing was killed: the first confirm of a publish after the "kill" comes within the
	// liveness bound (comparing it with the confirm gap depends on which publish a confirm
	// belongs to, and is timing-dependent on a loaded machine).
	if *res.FailoverMillis >= float64(cfg.failoverTimeout.Milliseconds()) {
		t.Errorf("failover %v ms with nothing killed: at the timeout", *res.FailoverMillis)
	}
	if res.Note == "" || *res.Published == 0 {
		t.Errorf("note %q, published %d", res.Note, *res.Published)
	}
}
