package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// runStatus prints the cluster as the node at --http sees it: members with their state, the
// Raft leader, term and applied index, and queues per node; --json prints the raw figures.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := apiFlags(fs, "the node to ask")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	get := api.get
	var nodes []map[string]any
	var overview map[string]any
	if err := get("/api/nodes", &nodes); err != nil {
		fmt.Fprintf(stderr, "node status: cannot read the node at %s: %v\n", api.addr, err)
		return 1
	}
	if err := get("/api/overview", &overview); err != nil {
		fmt.Fprintf(stderr, "node status: cannot read the node at %s: %v\n", api.addr, err)
		return 1
	}
	var queues []map[string]any
	if err := get("/api/queues", &queues); err != nil {
		// The node and cluster figures above stand on their own; say what is missing.
		fmt.Fprintf(stderr, "node status: no queue list from %s (replicated queues not shown): %v\n", api.addr, err)
	}
	var replicated []map[string]any
	for _, q := range queues {
		if q["type"] == "quorum" {
			replicated = append(replicated, map[string]any{
				"vhost": q["vhost"], "name": q["name"], "leader": q["leader"], "members": q["members"],
				"in_sync": q["in_sync"], "epoch": q["epoch"], "messages": q["messages"],
			})
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"nodes": nodes, "overview": overview, "replicated_queues": replicated})
		return 0
	}
	raft, _ := overview["raft"].(map[string]any)
	fmt.Fprintf(stdout, "leader: %v  raft term: %v  applied index: %v  topology digest: %v\n",
		orDash(overview["leader"]), orDash(raft["term"]), orDash(raft["applied_index"]), orDash(overview["topology_digest"]))
	if topo, _ := overview["topology"].(map[string]any); topo != nil && topo["writable"] == false {
		fmt.Fprintf(stdout, "topology: %v\n", orDash(topo["reason"]))
	}
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
	for _, n := range nodes {
		if n["self"] == true && n["mem_limit"] != nil {
			fmt.Fprintf(stdout, "this node (%v): connections %v (max %v), channel_max %v, memory %v of %v bytes, disk free %v bytes (limit %v), alarms: %s\n",
				n["name"], whole(n["connections"]), orNone(n["connection_max"]), whole(n["channel_max"]), whole(n["mem_used"]), whole(n["mem_limit"]),
				whole(n["disk_free"]), whole(n["disk_free_limit"]), alarms(n))
		}
	}
	// Set vhost and user limits (RabbitMQ's max-connections, max-queues, max-channels); the API
	// shows them only to administrators, so a refusal just leaves the lines out.
	for _, kind := range []string{"vhost", "user"} {
		var limits []map[string]any
		if err := get("/api/"+kind+"-limits", &limits); err == nil && len(limits) > 0 {
			fmt.Fprintf(stdout, "%s limits: %s\n", kind, limitList(kind, limits))
		}
	}
	if len(replicated) > 0 {
		// Each replica: "*" leads, "+" in sync (holds every confirmed message), "-" catching up.
		fmt.Fprintln(stdout, "replicated queues (* leader, + in sync, - catching up):")
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VHOST\tQUEUE\tEPOCH\tMESSAGES\tREPLICAS")
		for _, q := range replicated {
			fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%s\n", q["vhost"], q["name"], orDash(q["epoch"]), orDash(q["messages"]), replicaList(q))
		}
		_ = tw.Flush()
	}
	return 0
}

// limitList prints /api/vhost-limits or /api/user-limits as "/ max-connections=10; u max-channels=2".
func limitList(kind string, limits []map[string]any) string {
	var parts []string
	for _, l := range limits {
		values, _ := l["value"].(map[string]any)
		names := make([]string, 0, len(values))
		for name := range values {
			names = append(names, name)
		}
		sort.Strings(names)
		part := fmt.Sprint(l[kind])
		for _, name := range names {
			part += fmt.Sprintf(" %s=%v", name, whole(values[name]))
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

func replicaList(q map[string]any) string {
	inSync := map[any]bool{}
	if set, ok := q["in_sync"].([]any); ok {
		for _, r := range set {
			inSync[r] = true
		}
	}
	members, _ := q["members"].([]any)
	out := ""
	for i, m := range members {
		mark := "-"
		switch {
		case m == q["leader"]:
			mark = "*"
		case inSync[m]:
			mark = "+"
		}
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%v%s", m, mark)
	}
	return out
}

func orNone(v any) any {
	if f, ok := v.(float64); ok && f == 0 {
		return "none"
	}
	return whole(v)
}

// whole prints a JSON number as an integer (encoding/json decodes numbers as float64).
func whole(v any) any {
	if f, ok := v.(float64); ok {
		return fmt.Sprintf("%.0f", f)
	}
	return v
}

func alarms(n map[string]any) string {
	var on []string
	if n["mem_alarm"] == true {
		on = append(on, "memory")
	}
	if n["disk_free_alarm"] == true {
		on = append(on, "disk")
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, ", ")
}

func orDash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}
