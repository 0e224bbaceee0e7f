package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusSaysTopologyIsReadOnly: `node status` prints why topology is read-only when the
// node's API says so, and nothing about it when topology is writable.
func TestStatusSaysTopologyIsReadOnly(t *testing.T) {
	overview := `{"leader":"","topology":{"writable":false,"reason":"read-only: 1 of 3 Raft voters are alive (n3), a majority needs 2"},"raft":{}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/nodes":
			_, _ = w.Write([]byte(`[{"name":"n1","running":false,"state":"dead"},{"name":"n3","running":true,"state":"alive","queues":2}]`))
		case "/api/overview":
			_, _ = w.Write([]byte(overview))
		case "/api/vhost-limits":
			_, _ = w.Write([]byte(`[{"vhost":"/","value":{"max-queues":5,"max-connections":10}}]`))
		case "/api/user-limits":
			_, _ = w.Write([]byte(`[]`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--http", addr}, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "topology: read-only: 1 of 3 Raft voters are alive (n3), a majority needs 2\n") {
		t.Fatalf("status output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "vhost limits: / max-connections=10 max-queues=5\n") || strings.Contains(out.String(), "user limits") {
		t.Fatalf("limits in the status output:\n%s", out.String())
	}
	overview = `{"leader":"n1","topology":{"writable":true},"raft":{}}`
	out.Reset()
	if code := run([]string{"status", "--http", addr}, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "topology:") {
		t.Fatalf("writable topology reported:\n%s", out.String())
	}
}
