package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

// runStatus prints the cluster as the node at --http sees it: members with their state, the
// Raft leader, term and applied index, and queues per node; --json prints the raw figures.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", envDefault("http", "127.0.0.1:15672"), "HTTP API of the node to ask (env WARREN_HTTP)")
	user := fs.String("user", envDefault("user", "guest"), "API user (env WARREN_USER)")
	pass := fs.String("password", envDefault("password", "guest"), "API password (env WARREN_PASSWORD)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	api := apiClient{addr: *addr, user: *user, pass: *pass}
	get := api.get
	var nodes []map[string]any
	var overview map[string]any
	if err := get("/api/nodes", &nodes); err != nil {
		fmt.Fprintf(stderr, "node status: cannot read the node at %s: %v\n", *addr, err)
		return 1
	}
	if err := get("/api/overview", &overview); err != nil {
		fmt.Fprintf(stderr, "node status: cannot read the node at %s: %v\n", *addr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"nodes": nodes, "overview": overview})
		return 0
	}
	raft, _ := overview["raft"].(map[string]any)
	fmt.Fprintf(stdout, "leader: %v  raft term: %v  applied index: %v  topology digest: %v\n",
		orDash(overview["leader"]), orDash(raft["term"]), orDash(raft["applied_index"]), orDash(overview["topology_digest"]))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tLEADER\tQUEUES\tAMQP")
	for _, n := range nodes {
		lead := ""
		if n["leader"] == true {
			lead = "*"
		}
		fmt.Fprintf(tw, "%v\t%v\t%s\t%v\t%v\n", n["name"], orDash(n["state"]), lead, orDash(n["queues"]), orDash(n["amqp_addr"]))
	}
	_ = tw.Flush()
	return 0
}

// apiClient calls a node's HTTP API with basic auth.
type apiClient struct{ addr, user, pass string }

func (a apiClient) do(method, path string, out any) error {
	req, err := http.NewRequest(method, "http://"+a.addr+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.user, a.pass)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var body struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return fmt.Errorf("%s %s: HTTP %s: %s", method, path, resp.Status, body.Reason)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (a apiClient) get(path string, out any) error { return a.do(http.MethodGet, path, out) }

func orDash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}
