package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Broker labels scripts/bench.sh gives to the two brokers of a run; the table has one column each.
const (
	labelRabbitMQ = "rabbitmq"
	labelWarren   = "warren"
)

// metric is one row kind of a table: a figure read from a result.
type metric struct {
	name  string
	value func(*result) *float64
}

var speedMetrics = []metric{
	{"msgs/s", func(r *result) *float64 { return r.MsgsPerSec }},
	{"ops/s", func(r *result) *float64 { return r.OpsPerSec }},
	{"p50 µs", func(r *result) *float64 { return r.P50Micros }},
	{"p99 µs", func(r *result) *float64 { return r.P99Micros }},
	{"confirm p50 µs", func(r *result) *float64 { return r.ConfirmP50Micros }},
	{"confirm p99 µs", func(r *result) *float64 { return r.ConfirmP99Micros }},
}

var memoryMetrics = []metric{
	{"peak RSS MB", func(r *result) *float64 { return r.PeakRSSMB }},
	{"final RSS MB", func(r *result) *float64 {
		// Only the slow consumer's final RSS says something (whether the backlog was bounded).
		if r.Workload != "slow-consumer" {
			return nil
		}
		return r.FinalRSSMB
	}},
	{"RSS MB per 1000 conns", func(r *result) *float64 { return r.RSSDeltaMBPer1kConns }},
	{"RSS MB per 10000 queues", func(r *result) *float64 { return r.RSSDeltaMBPer10kQ }},
}

// comparison pairs the two brokers' results for each workload, in the order workloads first
// appear in the input.
type comparison struct {
	order  []string
	byName map[string]map[string]*result
	// skipped counts lines without a known broker label.
	skipped int
}

func readResults(r io.Reader) (*comparison, error) {
	c := &comparison{byName: map[string]map[string]*result{}}
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		if text == "" {
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(text), &res); err != nil {
			return nil, fmt.Errorf("result line %d: %w", line, err)
		}
		if res.Workload == "" {
			return nil, fmt.Errorf("result line %d: no workload", line)
		}
		if res.Broker != labelRabbitMQ && res.Broker != labelWarren {
			c.skipped++
			continue
		}
		brokers, ok := c.byName[res.Workload]
		if !ok {
			brokers = map[string]*result{}
			c.byName[res.Workload] = brokers
			c.order = append(c.order, res.Workload)
		}
		// A repeated workload keeps its latest figures: that is the run the operator looked at.
		brokers[res.Broker] = &res
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	return c, nil
}

func printTablesFromFile(path string, w io.Writer) error {
	in := os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("opening results: %w", err)
		}
		defer f.Close()
		in = f
	}
	c, err := readResults(in)
	if err != nil {
		return err
	}
	return c.writeMarkdown(w)
}

func (c *comparison) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("### Throughput and latency\n\n")
	c.writeTable(&b, speedMetrics)
	b.WriteString("\n### Broker memory (RSS from /proc)\n\n")
	c.writeTable(&b, memoryMetrics)
	b.WriteString("\nratio = Warren / RabbitMQ, both measured in this run: above 1 is better for msgs/s and ops/s, " +
		"below 1 is better for latency and memory.\n")
	var notes []string
	for _, workload := range c.order {
		for _, label := range []string{labelRabbitMQ, labelWarren} {
			if res := c.byName[workload][label]; res != nil {
				if res.Error != "" {
					notes = append(notes, fmt.Sprintf("- %s on %s failed: %s", workload, label, res.Error))
				}
				if res.Note != "" {
					notes = append(notes, fmt.Sprintf("- %s on %s: %s", workload, label, res.Note))
				}
			}
		}
	}
	if c.skipped > 0 {
		notes = append(notes, fmt.Sprintf("- %d result lines had no rabbitmq/warren label and were left out", c.skipped))
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes:\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing tables: %w", err)
	}
	return nil
}

func (c *comparison) writeTable(b *strings.Builder, metrics []metric) {
	b.WriteString("| workload | RabbitMQ | Warren | ratio |\n|---|---:|---:|---:|\n")
	rows := 0
	for _, workload := range c.order {
		rabbit, warren := c.byName[workload][labelRabbitMQ], c.byName[workload][labelWarren]
		for _, m := range metrics {
			rv, wv := metricValue(rabbit, m), metricValue(warren, m)
			if rv == nil && wv == nil {
				continue
			}
			rows++
			fmt.Fprintf(b, "| %s %s | %s | %s | %s |\n", workload, m.name,
				cell(rabbit, rv), cell(warren, wv), ratio(rabbit, warren, rv, wv))
		}
		// A failed workload that produced no figure still gets a row, so the failure is visible.
		if failedWithoutFigures(rabbit, metrics) || failedWithoutFigures(warren, metrics) {
			if !hasAnyFigure(rabbit, metrics) && !hasAnyFigure(warren, metrics) {
				rows++
				fmt.Fprintf(b, "| %s | %s | %s | – |\n", workload, status(rabbit), status(warren))
			}
		}
	}
	if rows == 0 {
		b.WriteString("| (no figures) | – | – | – |\n")
	}
}

func metricValue(res *result, m metric) *float64 {
	if res == nil {
		return nil
	}
	return m.value(res)
}

func hasAnyFigure(res *result, metrics []metric) bool {
	for _, m := range metrics {
		if metricValue(res, m) != nil {
			return true
		}
	}
	return false
}

func failedWithoutFigures(res *result, metrics []metric) bool {
	return res != nil && res.Error != "" && !hasAnyFigure(res, metrics)
}

func status(res *result) string {
	switch {
	case res == nil:
		return "not run"
	case res.Error != "":
		return "error"
	default:
		return "–"
	}
}

func cell(res *result, v *float64) string {
	if v == nil {
		return status(res)
	}
	if res.Error != "" {
		// A figure of a run that failed part-way is not shown (cmd/bench no longer writes
		// one; an older results file may hold it).
		return "error"
	}
	return strconv.FormatFloat(*v, 'f', -1, 64)
}

func ratio(rabbitRes, warrenRes *result, rabbit, warren *float64) string {
	if rabbit == nil || warren == nil || *rabbit == 0 || rabbitRes.Error != "" || warrenRes.Error != "" {
		return "–"
	}
	return strconv.FormatFloat(*warren / *rabbit, 'f', 2, 64)
}
