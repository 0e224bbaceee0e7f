package node_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func apiDo(t *testing.T, method, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestVhostLimitsAcrossNodes: max-queues set through the API of c1 refuses, right away, a
// queue declared on c2 (406, RabbitMQ's text); the limit is listed by c2's API; clearing it
// on c2 lets c1 declare. /api/nodes shows the node's own caps and alarms.
func TestVhostLimitsAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	api := func(i int) string { return "http://" + nodes[i].HTTP.Addr() }
	if r := apiDo(t, "PUT", api(0)+"/api/vhost-limits/%2F/max-queues", `{"value": 1}`); r.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT vhost limit: %s", r.Status)
	}
	ch2 := dialNode(t, nodes[1])
	if _, err := ch2.QueueDeclare("lim1", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err := ch2.QueueDeclare("lim2", false, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed ||
		ae.Reason != "PRECONDITION_FAILED - cannot declare queue 'lim2': queue limit in vhost '/' (1) is reached" {
		t.Fatalf("declare past max-queues on another node: %v", err)
	}
	var listed []struct {
		Vhost string         `json:"vhost"`
		Value map[string]int `json:"value"`
	}
	if err := json.NewDecoder(apiDo(t, "GET", api(1)+"/api/vhost-limits", "").Body).Decode(&listed); err != nil ||
		len(listed) != 1 || listed[0].Vhost != "/" || listed[0].Value["max-queues"] != 1 {
		t.Fatalf("vhost limits on c2: %+v %v", listed, err)
	}
	if r := apiDo(t, "PUT", api(0)+"/api/vhost-limits/%2F/max-widgets", `{"value": 1}`); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown limit: %s", r.Status)
	}
	if r := apiDo(t, "DELETE", api(1)+"/api/vhost-limits/%2F/max-queues", ""); r.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE vhost limit: %s", r.Status)
	}
	if _, err := dialNode(t, nodes[0]).QueueDeclare("lim2", false, false, false, false, nil); err != nil {
		t.Fatalf("declare after the limit was cleared: %v", err)
	}

	var ns []map[string]any
	if err := json.NewDecoder(apiDo(t, "GET", api(1)+"/api/nodes", "").Body).Decode(&ns); err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n["self"] == true {
			if n["disk_free_limit"] != float64(50_000_000) || n["disk_free_alarm"] != false || n["mem_alarm"] != false ||
				n["channel_max"] != float64(2047) || n["connections"] == nil {
				t.Fatalf("limits in /api/nodes: %v", n)
			}
			return
		}
	}
	t.Fatalf("no self entry in /api/nodes: %v", ns)
}
