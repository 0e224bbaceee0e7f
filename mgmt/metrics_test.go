package mgmt_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// metricValue reads one sample ("name{labels}" exactly as exposed) from a scrape.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no sample %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPrometheusMetrics: the owner node of a queue reports it with rabbitmq_prometheus's
// names and labels; publishes through another node show in the counters, the data links and
// the message store; Raft figures are there on every node.
func TestPrometheusMetrics(t *testing.T) {
	nodes := startCluster(t, 2)
	c, err := amqp.Dial("amqp://guest:guest@" + nodes[1].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	// Owned by w1 (declared through its API), published to through w2.
	if r := call(t, nodes[0].HTTP.Addr(), "PUT", "/api/queues/%2F/m-q", "guest", "guest", `{"durable":true}`); r.status != 201 {
		t.Fatalf("declare: %v", r)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", "m-q", false, false, amqp.Publishing{DeliveryMode: 2, Body: []byte("m")})
		if err != nil || !dc.Wait() {
			t.Fatalf("publish: %v", err)
		}
	}
	if _, err := ch.Consume("m-q", "", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var owner string
	waitFor(t, 10*time.Second, "unacked deliveries in the owner's metrics", func() bool {
		owner = scrape(t, nodes[0].HTTP.Addr())
		return strings.Contains(owner, `rabbitmq_queue_messages_unacked{queue="m-q",vhost="/"} 3`)
	})
	for series, want := range map[string]float64{
		`rabbitmq_queue_messages_ready{queue="m-q",vhost="/"}`: 0,
		`rabbitmq_queue_messages{queue="m-q",vhost="/"}`:       3,
		`rabbitmq_queue_consumers{queue="m-q",vhost="/"}`:      1,
		`rabbitmq_queues`: 1,
		`rabbitmq_identity_info{rabbitmq_cluster="warren",rabbitmq_cluster_permanent_id="warren",rabbitmq_node="w1"}`: 1,
	} {
		if got := metricValue(t, owner, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if metricValue(t, owner, "warren_store_fsyncs_total") < 1 || metricValue(t, owner, "warren_store_records_total") < 3 {
		t.Errorf("persistent publishes not in the store metrics:\n%s", owner)
	}
	front := scrape(t, nodes[1].HTTP.Addr())
	for _, name := range []string{"rabbitmq_global_messages_received_total", "rabbitmq_global_messages_confirmed_total", "rabbitmq_global_messages_routed_total", "rabbitmq_connections_opened_total"} {
		want := 3.0
		if name == "rabbitmq_connections_opened_total" {
			want = 1
		}
		if got := metricValue(t, front, name); got != want {
			t.Errorf("%s on w2 = %v, want %v", name, got, want)
		}
	}
	if got := metricValue(t, front, "rabbitmq_global_messages_delivered_consume_manual_ack_total"); got != 3 {
		t.Errorf("deliveries to the manual-ack consumer on w2 = %v, want 3", got)
	}
	if metricValue(t, front, "rabbitmq_connections") != 1 || metricValue(t, front, "rabbitmq_consumers") != 1 {
		t.Errorf("w2 connections/consumers:\n%s", front)
	}
	if metricValue(t, front, "warren_datalink_sent_bytes_total") <= 0 {
		t.Error("forwarded publishes not in the data-link metrics")
	}
	for _, text := range []string{owner, front} {
		if metricValue(t, text, "warren_raft_term") < 1 || metricValue(t, text, "warren_raft_applied_index") < 1 {
			t.Error("raft metrics missing")
		}
	}
	if metricValue(t, owner, "warren_raft_is_leader")+metricValue(t, front, "warren_raft_is_leader") != 1 {
		t.Error("not exactly one leader in the metrics")
	}
}

// TestOverviewMessageRates: rabbitmqadmin's show overview on one node reports the cluster's
// message counters and rates for publishes made through another node.
func TestOverviewMessageRates(t *testing.T) {
	if _, err := os.Stat("/usr/bin/rabbitmqadmin"); err != nil {
		t.Skipf("needs Debian's rabbitmqadmin: %v", err)
	}
	nodes := startCluster(t, 2)
	c, err := amqp.Dial("amqp://guest:guest@" + nodes[1].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	if _, err := ch.QueueDeclare("rates", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := ch.Publish("", "rates", false, false, amqp.Publishing{Body: []byte("r")}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		if _, ok, err := ch.Get("rates", true); err != nil || !ok {
			t.Fatalf("get: %v %v", ok, err)
		}
	}
	_, port, _ := net.SplitHostPort(nodes[0].HTTP.Addr())
	var out string
	waitFor(t, 10*time.Second, "the overview to count the messages", func() bool {
		o, _, ok := admin(t, port, "-f", "tsv", "show", "overview", "message_stats.publish", "message_stats.get_no_ack", "queue_totals.messages")
		out = o
		return ok && strings.HasSuffix(strings.TrimSpace(o), "50\t20\t30")
	})
	o, errOut, ok := admin(t, port, "-f", "raw_json", "show", "overview")
	var ov []map[string]any // show prints a list of one
	if !ok || json.Unmarshal([]byte(o), &ov) != nil || len(ov) != 1 {
		t.Fatalf("show overview: %q %q (%s)", o, errOut, out)
	}
	ms := ov[0]["message_stats"].(map[string]any)
	if rate := ms["publish_details"].(map[string]any)["rate"].(float64); rate <= 0 {
		t.Fatalf("publish rate %v in %v", rate, ms)
	}
}

// TestHealthChecksAndMemoryAlarm: RabbitMQ's alarm health checks answer 200 ok, then 503 naming
// the node (asked through another node) once its memory alarm is on, and the metric says so;
// local-alarms on a node without the alarm stays ok.
func TestHealthChecksAndMemoryAlarm(t *testing.T) {
	nodes := startCluster(t, 2)
	a1, a2 := nodes[0].HTTP.Addr(), nodes[1].HTTP.Addr()
	if r := call(t, a2, "GET", "/api/health/checks/alarms", "guest", "guest", ""); r.status != 200 || r.body != `{"status":"ok"}` {
		t.Fatalf("alarms before: %v", r)
	}
	nodes[0].AMQP.SetMemoryHighWatermark(1) // any heap is over it
	defer nodes[0].AMQP.SetMemoryHighWatermark(1 << 40)
	waitFor(t, 10*time.Second, "the alarm in the health check", func() bool {
		r := call(t, a2, "GET", "/api/health/checks/alarms", "guest", "guest", "")
		return r.status == 503 && strings.Contains(r.body, `"alarms":[{"node":"w1","resource":"memory"}]`)
	})
	if r := call(t, a2, "GET", "/api/health/checks/local-alarms", "guest", "guest", ""); r.status != 200 {
		t.Fatalf("local-alarms on w2: %v", r)
	}
	if r := call(t, a1, "GET", "/api/health/checks/local-alarms", "guest", "guest", ""); r.status != 503 {
		t.Fatalf("local-alarms on w1: %v", r)
	}
	if v := metricValue(t, scrape(t, a1), "rabbitmq_alarms_memory_used_watermark"); v != 1 {
		t.Fatalf("alarm metric %v", v)
	}
	nodes[0].AMQP.SetMemoryHighWatermark(1 << 40)
	waitFor(t, 10*time.Second, "the alarm to clear", func() bool {
		return call(t, a2, "GET", "/api/health/checks/alarms", "guest", "guest", "").status == 200
	})
}
