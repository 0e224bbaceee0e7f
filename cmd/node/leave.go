package main

import (
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
	api := apiFlags(fs, "the node that leaves")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long the hand-over may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: node leave [--http ADDR] [--timeout DURATION]")
		return 2
	}
	api.timeout = *timeout + 30*time.Second
	var rep struct {
		QueuesMoved   int    `json:"queues_moved"`
		MessagesMoved int64  `json:"messages_moved"`
		Took          string `json:"took"`
	}
	stop := watchProgress(*api, stdout, "leave")
	err := api.do(http.MethodPost, "/api/cluster/leave?timeout="+url.QueryEscape(timeout.String()), &rep)
	stop()
	if err != nil {
		fmt.Fprintf(stderr, "node leave: the node at %s did not leave: %v\n", api.addr, err)
		return 1
	}
	fmt.Fprintf(stdout, "node left the cluster: %d queues and %d messages handed over in %s; it is shutting down\n",
		rep.QueuesMoved, rep.MessagesMoved, rep.Took)
	return 0
}
