package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runJoin asks the node at --http (a fresh node, alone in its own cluster) to join the cluster
// reachable at the given gossip addresses.
func runJoin(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", envDefault("http", "127.0.0.1:15672"), "HTTP API of the node that joins (env WARREN_HTTP)")
	user := fs.String("user", envDefault("user", "guest"), "API user (env WARREN_USER)")
	pass := fs.String("password", envDefault("password", "guest"), "API password (env WARREN_PASSWORD)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: node join [--http ADDR] GOSSIP-ADDR[,GOSSIP-ADDR...]")
		return 2
	}
	seeds := splitList(fs.Arg(0))
	if len(seeds) == 0 {
		fmt.Fprintln(stderr, "node join: no gossip address given")
		return 2
	}
	body, _ := json.Marshal(map[string][]string{"seeds": seeds})
	req, err := http.NewRequest(http.MethodPost, "http://"+*addr+"/api/cluster/join", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "node join: %v\n", err)
		return 2
	}
	req.SetBasicAuth(*user, *pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "node join: cannot reach the node at %s: %v\n", *addr, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		var e struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		fmt.Fprintf(stderr, "node join: the node at %s did not join (HTTP %s): %s\n", *addr, resp.Status, e.Reason)
		return 1
	}
	fmt.Fprintf(stdout, "node at %s joined the cluster via %v\n", *addr, seeds)
	return 0
}

// runRebalance asks the cluster (through the node at --http) to spread queues evenly.
func runRebalance(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node rebalance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", envDefault("http", "127.0.0.1:15672"), "HTTP API of any running node (env WARREN_HTTP)")
	user := fs.String("user", envDefault("user", "guest"), "API user (env WARREN_USER)")
	pass := fs.String("password", envDefault("password", "guest"), "API password (env WARREN_PASSWORD)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: node rebalance [--http ADDR]")
		return 2
	}
	var out struct {
		Moved int `json:"moved"`
	}
	if err := (apiClient{*addr, *user, *pass}).do(http.MethodPost, "/api/cluster/rebalance", &out); err != nil {
		fmt.Fprintf(stderr, "node rebalance: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d queues moved; their messages follow them\n", out.Moved)
	return 0
}
