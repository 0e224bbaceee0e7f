package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// The user, vhost, permissions and definitions commands manage a cluster through any node's
// management API (as rabbitmqctl and rabbitmqadmin do); the calling user must be an
// administrator.

// sub parses a `node NOUN VERB [flags] ARGS` command line.
type sub struct {
	name           string
	fs             *flag.FlagSet
	api            *apiClient
	stdout, stderr io.Writer
	usage          string
}

func newSub(name, usage string, stdout, stderr io.Writer) *sub {
	fs := flag.NewFlagSet("node "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &sub{name: name, fs: fs, api: apiFlags(fs, "any node of the cluster"), stdout: stdout, stderr: stderr, usage: usage}
}

// parse parses flags (also after the arguments) and wants between min and max arguments.
func (s *sub) parse(args []string, minArgs, maxArgs int) ([]string, bool) {
	var pos []string
	for {
		if err := s.fs.Parse(args); err != nil {
			return nil, false
		}
		if s.fs.NArg() == 0 {
			break
		}
		pos = append(pos, s.fs.Arg(0))
		args = s.fs.Args()[1:]
	}
	if len(pos) < minArgs || len(pos) > maxArgs {
		fmt.Fprintln(s.stderr, "usage: "+s.usage)
		return nil, false
	}
	return pos, true
}

func (s *sub) fail(err error) int {
	fmt.Fprintf(s.stderr, "node %s: %v\n", s.name, err)
	return 1
}

func pathSeg(v string) string { return url.PathEscape(v) }

// readPassword takes the password argument, or a line of stdin when it is "-" or missing.
func readPassword(args []string, i int) (string, error) {
	if len(args) > i && args[i] != "-" {
		return args[i], nil
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("no password given (as an argument or a line on stdin)")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func runUser(args []string, stdout, stderr io.Writer) int {
	verb := ""
	if len(args) > 0 {
		verb, args = args[0], args[1:]
	}
	switch verb {
	case "add":
		s := newSub("user add", "node user add [--http ADDR] [--tags administrator,...] NAME [PASSWORD|-]", stdout, stderr)
		tags := s.fs.String("tags", "", "comma-separated tags: administrator, monitoring, management (none: no API access)")
		pos, ok := s.parse(args, 1, 2)
		if !ok {
			return 2
		}
		pw, err := readPassword(pos, 1)
		if err != nil {
			return s.fail(err)
		}
		if _, exists := s.userTags(pos[0]); exists {
			return s.fail(fmt.Errorf("user %q already exists (use node user passwd or node user tags)", pos[0]))
		}
		if err := s.api.call(http.MethodPut, "/api/users/"+pathSeg(pos[0]), map[string]any{"password": pw, "tags": *tags}, nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "user %s added\n", pos[0])
	case "delete":
		s := newSub("user delete", "node user delete [--http ADDR] NAME", stdout, stderr)
		pos, ok := s.parse(args, 1, 1)
		if !ok {
			return 2
		}
		if err := s.api.do(http.MethodDelete, "/api/users/"+pathSeg(pos[0]), nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "user %s deleted\n", pos[0])
	case "list":
		s := newSub("user list", "node user list [--http ADDR]", stdout, stderr)
		if _, ok := s.parse(args, 0, 0); !ok {
			return 2
		}
		var users []struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := s.api.get("/api/users", &users); err != nil {
			return s.fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tTAGS")
		for _, u := range users {
			fmt.Fprintf(tw, "%s\t%s\n", u.Name, strings.Join(u.Tags, ","))
		}
		_ = tw.Flush()
	case "passwd":
		s := newSub("user passwd", "node user passwd [--http ADDR] NAME [PASSWORD|-]", stdout, stderr)
		pos, ok := s.parse(args, 1, 2)
		if !ok {
			return 2
		}
		tags, exists := s.userTags(pos[0])
		if !exists {
			return s.fail(fmt.Errorf("no user %q", pos[0]))
		}
		pw, err := readPassword(pos, 1)
		if err != nil {
			return s.fail(err)
		}
		if err := s.api.call(http.MethodPut, "/api/users/"+pathSeg(pos[0]), map[string]any{"password": pw, "tags": tags}, nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "password of %s changed\n", pos[0])
	case "tags":
		s := newSub("user tags", "node user tags [--http ADDR] NAME [TAG...]", stdout, stderr)
		pos, ok := s.parse(args, 1, 64)
		if !ok {
			return 2
		}
		if _, exists := s.userTags(pos[0]); !exists {
			return s.fail(fmt.Errorf("no user %q", pos[0]))
		}
		tags := pos[1:]
		if tags == nil {
			tags = []string{}
		}
		if err := s.api.call(http.MethodPut, "/api/users/"+pathSeg(pos[0]), map[string]any{"tags": tags}, nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "tags of %s set to [%s]\n", pos[0], strings.Join(tags, ","))
	default:
		fmt.Fprintln(stderr, "usage: node user add|delete|list|passwd|tags ... (node user VERB -h for flags)")
		return 2
	}
	return 0
}

// userTags reads a user's tags; exists is false when the API says 404.
func (s *sub) userTags(name string) (tags []string, exists bool) {
	var u struct {
		Tags []string `json:"tags"`
	}
	if err := s.api.get("/api/users/"+pathSeg(name), &u); err != nil {
		return nil, false
	}
	return u.Tags, true
}

func runVhost(args []string, stdout, stderr io.Writer) int {
	verb := ""
	if len(args) > 0 {
		verb, args = args[0], args[1:]
	}
	switch verb {
	case "add", "delete":
		s := newSub("vhost "+verb, "node vhost "+verb+" [--http ADDR] NAME", stdout, stderr)
		pos, ok := s.parse(args, 1, 1)
		if !ok {
			return 2
		}
		method, done := http.MethodPut, "added"
		if verb == "delete" {
			method, done = http.MethodDelete, "deleted"
		}
		if err := s.api.do(method, "/api/vhosts/"+pathSeg(pos[0]), nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "vhost %s %s\n", pos[0], done)
	case "list":
		s := newSub("vhost list", "node vhost list [--http ADDR]", stdout, stderr)
		if _, ok := s.parse(args, 0, 0); !ok {
			return 2
		}
		var vhosts []struct {
			Name     string `json:"name"`
			Messages *int   `json:"messages"`
		}
		if err := s.api.get("/api/vhosts", &vhosts); err != nil {
			return s.fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VHOST\tMESSAGES")
		for _, v := range vhosts {
			n := 0
			if v.Messages != nil {
				n = *v.Messages
			}
			fmt.Fprintf(tw, "%s\t%d\n", v.Name, n)
		}
		_ = tw.Flush()
	default:
		fmt.Fprintln(stderr, "usage: node vhost add|delete|list ...")
		return 2
	}
	return 0
}

func runPermissions(args []string, stdout, stderr io.Writer) int {
	verb := ""
	if len(args) > 0 {
		verb, args = args[0], args[1:]
	}
	switch verb {
	case "set":
		s := newSub("permissions set", "node permissions set [--http ADDR] [--vhost VHOST] USER CONFIGURE WRITE READ", stdout, stderr)
		vhost := s.fs.String("vhost", "/", "vhost")
		pos, ok := s.parse(args, 4, 4)
		if !ok {
			return 2
		}
		body := map[string]string{"configure": pos[1], "write": pos[2], "read": pos[3]}
		if err := s.api.call(http.MethodPut, "/api/permissions/"+pathSeg(*vhost)+"/"+pathSeg(pos[0]), body, nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "permissions of %s in vhost %s set\n", pos[0], *vhost)
	case "clear":
		s := newSub("permissions clear", "node permissions clear [--http ADDR] [--vhost VHOST] USER", stdout, stderr)
		vhost := s.fs.String("vhost", "/", "vhost")
		pos, ok := s.parse(args, 1, 1)
		if !ok {
			return 2
		}
		if err := s.api.do(http.MethodDelete, "/api/permissions/"+pathSeg(*vhost)+"/"+pathSeg(pos[0]), nil); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "permissions of %s in vhost %s cleared\n", pos[0], *vhost)
	case "list":
		s := newSub("permissions list", "node permissions list [--http ADDR] [--vhost VHOST]", stdout, stderr)
		vhost := s.fs.String("vhost", "", "only this vhost")
		if _, ok := s.parse(args, 0, 0); !ok {
			return 2
		}
		path := "/api/permissions"
		if *vhost != "" {
			path = "/api/vhosts/" + pathSeg(*vhost) + "/permissions"
		}
		var perms []map[string]string
		if err := s.api.get(path, &perms); err != nil {
			return s.fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tVHOST\tCONFIGURE\tWRITE\tREAD")
		for _, p := range perms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p["user"], p["vhost"], p["configure"], p["write"], p["read"])
		}
		_ = tw.Flush()
	default:
		fmt.Fprintln(stderr, "usage: node permissions set|clear|list ...")
		return 2
	}
	return 0
}

func runDefinitions(args []string, stdout, stderr io.Writer) int {
	verb := ""
	if len(args) > 0 {
		verb, args = args[0], args[1:]
	}
	if verb != "export" && verb != "import" {
		fmt.Fprintln(stderr, "usage: node definitions export|import [--http ADDR] FILE   (RabbitMQ's definitions JSON; - for stdout/stdin)")
		return 2
	}
	s := newSub("definitions "+verb, "node definitions "+verb+" [--http ADDR] FILE", stdout, stderr)
	pos, ok := s.parse(args, 1, 1)
	if !ok {
		return 2
	}
	file := pos[0]
	if verb == "export" {
		var defs json.RawMessage
		if err := s.api.get("/api/definitions", &defs); err != nil {
			return s.fail(err)
		}
		if file == "-" {
			_, _ = stdout.Write(append(defs, '\n'))
			return 0
		}
		if err := os.WriteFile(file, append(defs, '\n'), 0o600); err != nil {
			return s.fail(err)
		}
		fmt.Fprintf(stdout, "definitions exported to %s\n", file)
		return 0
	}
	var raw []byte
	var err error
	if file == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return s.fail(err)
	}
	var defs json.RawMessage
	if err := json.Unmarshal(raw, &defs); err != nil {
		return s.fail(fmt.Errorf("%s is not JSON: %w", file, err))
	}
	stop := watchProgress(*s.api, s.stdout, "import")
	err = s.api.call(http.MethodPost, "/api/definitions", defs, nil)
	stop()
	if err != nil {
		return s.fail(err)
	}
	fmt.Fprintf(stdout, "definitions imported from %s\n", file)
	return 0
}

// progressLine reads the newest report of op started after since; running says whether it
// still runs.
func progressLine(api apiClient, op string, since time.Time) (line string, running, found bool) {
	var ps []map[string]any
	if err := api.get("/api/progress", &ps); err != nil {
		return "", false, false
	}
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		st, err := time.Parse(time.RFC3339Nano, fmt.Sprint(p["started"]))
		if p["operation"] != op || err != nil || st.Before(since.Add(-time.Second)) {
			continue
		}
		line = fmt.Sprintf("%s: %v queues and %v messages moved", op, p["queues"], p["messages"])
		if op == "import" {
			line = fmt.Sprintf("%s: %v of %v definitions", op, p["items"], p["total"])
		}
		line += fmt.Sprintf(" after %.1fs (%.0f queues/s, %.0f messages/s)", p["elapsed_seconds"], p["queues_per_second"], p["messages_per_second"])
		if e, ok := p["error"]; ok {
			line += fmt.Sprintf("; %v", e)
		}
		return line, p["running"] == true, true
	}
	return "", false, false
}

// watchProgress prints the node's progress report of op every second while it runs, until
// stop is called (the request that runs it returned).
func watchProgress(api apiClient, out io.Writer, op string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	started := time.Now()
	api.timeout = 5 * time.Second
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			if line, running, ok := progressLine(api, op, started); ok && running {
				fmt.Fprintln(out, line)
			}
		}
	}()
	return func() { close(quit); <-done }
}

// followProgress prints op's progress every second until it has finished (or timeout), then
// its final report.
func followProgress(api apiClient, out io.Writer, op string, since time.Time, timeout time.Duration) {
	api.timeout = 5 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		line, running, ok := progressLine(api, op, since)
		if !ok {
			return
		}
		fmt.Fprintln(out, line)
		if !running || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Second)
	}
}
