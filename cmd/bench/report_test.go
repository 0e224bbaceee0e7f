package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const sampleResults = `{"workload":"1p1c","broker":"rabbitmq","broker_url":"r","duration_s":5,"msgs_per_sec":40000,"p50_us":2000,"p99_us":4000,"peak_rss_mb":150}
{"workload":"1p1c","broker":"warren","broker_url":"w","duration_s":5,"msgs_per_sec":30000,"p50_us":1000,"p99_us":8000,"peak_rss_mb":60}

{"workload":"idle-conns","broker":"rabbitmq","broker_url":"r","duration_s":1,"rss_delta_mb_per_1000_conns":50,"conns_opened":832,"note":"opened 832 of 1000 connections"}
{"workload":"idle-conns","broker":"warren","broker_url":"w","duration_s":1,"error":"dialling: connection refused"}
{"workload":"rpc","broker":"someone-else","broker_url":"x","duration_s":1,"ops_per_sec":1}
`

func TestMarkdownTablesCompareBrokers(t *testing.T) {
	c, err := readResults(strings.NewReader(sampleResults))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.writeMarkdown(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"| workload | RabbitMQ | Warren | ratio |",
		"| 1p1c msgs/s | 40000 | 30000 | 0.75 |",
		"| 1p1c p99 µs | 4000 | 8000 | 2.00 |",
		"| 1p1c peak RSS MB | 150 | 60 | 0.40 |",
		"| idle-conns RSS MB per 1000 conns | 50 | error | – |",
		"idle-conns on warren failed: dialling: connection refused",
		"idle-conns on rabbitmq: opened 832 of 1000 connections",
		"1 result lines had no rabbitmq/warren label",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("tables lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "rpc") {
		t.Errorf("a result of an unknown broker made it into the tables:\n%s", text)
	}
	if strings.Index(text, "| 1p1c msgs/s") > strings.Index(text, "| idle-conns") {
		t.Error("workloads are not in the order they were run")
	}
}

func TestFailedWorkloadWithoutFiguresStillGetsARow(t *testing.T) {
	lines := `{"workload":"fanout","broker":"rabbitmq","broker_url":"r","duration_s":1,"error":"boom"}` + "\n"
	c, err := readResults(strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.writeMarkdown(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| fanout | error | not run | – |") {
		t.Fatalf("no failure row:\n%s", out.String())
	}
}

func TestReadResultsRejectsBadLines(t *testing.T) {
	for name, input := range map[string]string{
		"not json":    "hello\n",
		"no workload": `{"broker":"warren"}` + "\n",
		"wrong type":  `{"workload":"1p1c","broker":"warren","msgs_per_sec":"fast"}` + "\n",
	} {
		if _, err := readResults(strings.NewReader(input)); err == nil {
			t.Errorf("%s: accepted %q", name, input)
		}
	}
}

func TestTableFlagReadsAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.jsonl")
	if err := os.WriteFile(path, []byte(sampleResults), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-table", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| 1p1c msgs/s | 40000 | 30000 | 0.75 |") {
		t.Fatalf("unexpected table:\n%s", stdout.String())
	}
	if code := run([]string{"-table", filepath.Join(t.TempDir(), "missing")}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d for a missing results file, want 1", code)
	}
}

func FuzzReadResults(f *testing.F) {
	f.Add(sampleResults)
	f.Add(`{"workload":"x","broker":"warren","msgs_per_sec":0}`)
	f.Add("{}\n\n{")
	f.Fuzz(func(t *testing.T, input string) {
		c, err := readResults(strings.NewReader(input))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := c.writeMarkdown(&out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "| workload | RabbitMQ | Warren | ratio |") {
			t.Fatal("tables without a header")
		}
	})
}

func FuzzParseProcStatus(f *testing.F) {
	f.Add("VmHWM:\t 10 kB\nVmRSS:\t 5 kB\n")
	f.Add("VmRSS:")
	f.Fuzz(func(t *testing.T, input string) {
		mem, err := parseProcStatus(strings.NewReader(input))
		if err == nil && (mem.rssKB < 0 || mem.hwmKB < 0) {
			t.Fatalf("negative memory %+v from %q", mem, input)
		}
	})
}

// A run that failed part-way shows no figure and no ratio, even when an older results file
// still carries its figures.
func TestFailedRunShowsNoFigure(t *testing.T) {
	lines := `{"workload":"persistent","broker":"rabbitmq","broker_url":"r","duration_s":5,"msgs_per_sec":9000,"p99_us":800}
{"workload":"persistent","broker":"warren","broker_url":"w","duration_s":5,"msgs_per_sec":12000,"p99_us":700,"error":"publishing: channel closed"}
`
	c, err := readResults(strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.writeMarkdown(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"| persistent msgs/s | 9000 | error | – |", "| persistent p99 µs | 800 | error | – |"} {
		if !strings.Contains(text, want) {
			t.Errorf("tables lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "12000") || strings.Contains(text, "1.33") {
		t.Errorf("a figure of the failed run reached the tables:\n%s", text)
	}
}

// withheld keeps the run's identity and the error (with the counts it reached) and drops every
// figure.
func TestWithheldDropsEveryFigure(t *testing.T) {
	measured := result{Workload: "persistent", Broker: "warren", BrokerURL: "w", DurationSec: 5,
		MsgsPerSec: num(12000), P99Micros: num(700), PeakRSSMB: num(40), Published: count(60000), Delivered: count(59000), Nacked: count(60000)}
	got := withheld(measured, errors.New("60000 of 60000 publishes nacked by the broker"))
	want := result{Workload: "persistent", Broker: "warren", BrokerURL: "w", DurationSec: 5,
		Error: "60000 of 60000 publishes nacked by the broker (reached published=60000 delivered=59000 nacked=60000; figures withheld)"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("withheld:\n got %+v\nwant %+v", got, want)
	}
}
