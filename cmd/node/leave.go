package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// runLeave asks the node at --http to leave the cluster gracefully: it hands its queues (and
// their messages) to other nodes, leaves Raft and gossip, and exits.
func runLeave(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node leave", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", envDefault("http", "127.0.0.1:15672"), "HTTP API of the node that leaves (env WARREN_HTTP)")
	user := fs.String("user", envDefault("user", "guest"), "API user (env WARREN_USER)")
	pass := fs.String("password", envDefault("password", "guest"), "API password (env WARREN_PASSWORD)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long the hand-over may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: node leave [--http ADDR] [--timeout DURATION]")
		return 2
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+*addr+"/api/cluster/leave?timeout="+url.QueryEscape(timeout.String()), nil)
	if err != nil {
		fmt.Fprintf(stderr, "node leave: %v\n", err)
		return 2
	}
	req.SetBasicAuth(*user, *pass)
	resp, err := (&http.Client{Timeout: *timeout + 30*time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "node leave: cannot reach the node at %s: %v\n", *addr, err)
		return 1
	}
	defer resp.Body.Close()
	var body struct {
		Reason        string         `json:"reason"`
		QueuesMoved   int            `json:"queues_moved"`
		MessagesMoved int64          `json:"messages_moved"`
		Took          string         `json:"took"`
		Report        map[string]any `json:"report"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "node leave: the node at %s did not leave (HTTP %s): %s\n", *addr, resp.Status, body.Reason)
		return 1
	}
	fmt.Fprintf(stdout, "node left the cluster: %d queues and %d messages handed over in %s; it is shutting down\n",
		body.QueuesMoved, body.MessagesMoved, body.Took)
	return 0
}
