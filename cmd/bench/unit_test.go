package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBucketBoundsContainTheirValues(t *testing.T) {
	values := []uint64{0, 1, 511, 512, 513, 1023, 1024, 1025, 4095, 123456, 1 << 40, math.MaxUint64}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, rng.Uint64N(1<<uint(rng.IntN(63)+1)))
	}
	for _, v := range values {
		i := bucketIndex(v)
		if i < 0 || i >= histogramBuckets {
			t.Fatalf("bucketIndex(%d) = %d, outside [0,%d)", v, i, histogramBuckets)
		}
		lo := bucketLowerBound(i)
		if lo > v {
			t.Fatalf("value %d in bucket %d whose lower bound %d is above it", v, i, lo)
		}
		if i+1 < histogramBuckets && bucketLowerBound(i+1) <= v {
			t.Fatalf("value %d in bucket %d but the next bucket starts at %d", v, i, bucketLowerBound(i+1))
		}
		if v >= linearLimit && float64(v-lo)/float64(v) > 1.0/subBuckets {
			t.Fatalf("value %d reported as %d: error above 1/%d", v, lo, subBuckets)
		}
	}
}

func TestPercentilesMatchExactOnesWithinPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h latencyHistogram
	var exact []float64
	for range 50000 {
		// Log-normal-ish latencies between ~100 µs and ~1 s, like a real broker's tail.
		micros := math.Exp(rng.NormFloat64()*1.5 + 7)
		h.record(time.Duration(micros * float64(time.Microsecond)))
		exact = append(exact, math.Floor(micros))
	}
	slices.Sort(exact)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		got, ok := h.percentile(q)
		if !ok {
			t.Fatalf("percentile(%v) reported no samples", q)
		}
		want := exact[int(q*float64(len(exact)))-1]
		if math.Abs(got-want)/want > 0.01 {
			t.Errorf("p%v = %v, exact %v: more than 1%% apart", q*100, got, want)
		}
	}
}

func TestEmptyHistogramHasNoPercentiles(t *testing.T) {
	var h latencyHistogram
	if _, ok := h.percentile(0.5); ok {
		t.Fatal("empty histogram claims a percentile")
	}
	var p50, p99 *float64
	h.fillPercentiles(&p50, &p99)
	if p50 != nil || p99 != nil {
		t.Fatal("empty histogram filled percentile fields")
	}
}

func TestMergeAddsCounts(t *testing.T) {
	var fast, slow latencyHistogram
	for range 98 {
		fast.record(100 * time.Microsecond)
	}
	slow.record(time.Second)
	slow.record(time.Second)
	fast.merge(&slow)
	if fast.total != 100 {
		t.Fatalf("merged total = %d, want 100", fast.total)
	}
	if p50, _ := fast.percentile(0.5); p50 != 100 {
		t.Errorf("p50 = %v µs, want 100", p50)
	}
	if p99, _ := fast.percentile(0.99); p99 < 990000 {
		t.Errorf("p99 = %v µs, want about 1 s: the merged slow samples were lost", p99)
	}
	var negative latencyHistogram
	negative.record(-time.Second) // must not panic or index out of range
	if negative.counts[0] != 1 {
		t.Error("a negative duration was not counted as zero")
	}
}

func TestBodyAge(t *testing.T) {
	body := stampedBody(256)
	if len(body) != 256 {
		t.Fatalf("body size %d, want 256", len(body))
	}
	time.Sleep(2 * time.Millisecond)
	age, ok := bodyAge(body)
	if !ok || age < 2*time.Millisecond || age > time.Minute {
		t.Fatalf("bodyAge = %v, %v; want a few milliseconds", age, ok)
	}
	if _, ok := bodyAge([]byte{1, 2, 3}); ok {
		t.Error("a short body was given an age")
	}
	future := make([]byte, 8)
	binary.BigEndian.PutUint64(future, uint64(time.Since(processStart)+time.Hour))
	if _, ok := bodyAge(future); ok {
		t.Error("a body stamped in the future was given an age")
	}
	negative := bytes.Repeat([]byte{0xff}, 8)
	if _, ok := bodyAge(negative); ok {
		t.Error("a body with a negative stamp was given an age")
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tbeam.smp\nVmPeak:\t 3000000 kB\nVmHWM:\t  141256 kB\nVmRSS:\t  121860 kB\nThreads:\t42\n"
	mem, err := parseProcStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if mem.rssKB != 121860 || mem.hwmKB != 141256 {
		t.Fatalf("parsed %+v, want rss 121860 hwm 141256", mem)
	}
	for name, bad := range map[string]string{
		"no rss":       "Name:\tkthreadd\nThreads:\t1\n",
		"bad unit":     "VmRSS:\t 12 MB\n",
		"bad number":   "VmRSS:\t twelve kB\n",
		"negative":     "VmRSS:\t -5 kB\n",
		"extra fields": "VmRSS:\t 5 kB 6\n",
	} {
		if _, err := parseProcStatus(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: parsed %q without error", name, bad)
		}
	}
}

func TestReadOwnProcessMemory(t *testing.T) {
	mem, err := readProcessMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if mem.rssKB <= 0 || mem.hwmKB < mem.rssKB {
		t.Fatalf("implausible memory of the test process: %+v", mem)
	}
	if _, err := readProcessMemory(1 << 30); err == nil {
		t.Fatal("reading a pid that cannot exist did not fail")
	}
}

func TestSamplerSeesPeakAndFinishIsIdempotent(t *testing.T) {
	s, err := startRSSSampler(os.Getpid(), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Touch 64 MB so the process's RSS rises while the sampler runs.
	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	time.Sleep(50 * time.Millisecond)
	first := s.finish()
	second := s.finish()
	if first != second {
		t.Fatalf("finish changed its answer: %+v then %+v", first, second)
	}
	if first.samples < 3 {
		t.Fatalf("only %d samples in 50 ms at a 5 ms interval", first.samples)
	}
	if first.peakKB < first.startKB+32*1024 {
		t.Fatalf("peak %d kB not above start %d kB by the 64 MB ballast", first.peakKB, first.startKB)
	}
	if ballast[len(ballast)-1] != byte(len(ballast)-1) {
		t.Fatal("ballast changed") // keeps ballast alive until after the readings
	}
}

func TestIsSteady(t *testing.T) {
	cases := []struct {
		readings []int64
		want     bool
	}{
		{[]int64{100000, 100000, 100000}, false}, // too few readings
		{[]int64{500000, 100000, 100100, 100200, 100050}, true},
		{[]int64{100000, 120000, 100000, 100000}, false},
		{[]int64{1000000, 1004000, 1001000, 1000500}, true}, // within 0.5%
	}
	for _, c := range cases {
		if got := isSteady(c.readings, 4); got != c.want {
			t.Errorf("isSteady(%v) = %v, want %v", c.readings, got, c.want)
		}
	}
}

func TestRunNamesAreUniqueAcrossRuns(t *testing.T) {
	a, b := newRunNames("1p1c"), newRunNames("1p1c")
	if a.prefix == b.prefix {
		t.Fatalf("two runs share the prefix %q", a.prefix)
	}
	first, second := a.name("q"), a.name("q")
	if first == second || !strings.HasPrefix(first, a.prefix) {
		t.Fatalf("names %q and %q: not unique or not under %q", first, second, a.prefix)
	}
	if got := a.all(); len(got) != 2 || got[0].kind != "q" || got[1].name != second {
		t.Fatalf("issued names = %+v", got)
	}
}

func TestParseFlagsRejectsBadInput(t *testing.T) {
	bad := map[string][]string{
		"unknown workload":          {"-workload", "nope"},
		"no workload":               {},
		"size below the timestamp":  {"-workload", "1p1c", "-size", "4"},
		"zero duration":             {"-workload", "1p1c", "-duration", "0s"},
		"memory workload, no pid":   {"-workload", "idle-conns"},
		"queues workload, no pid":   {"-workload", "empty-queues"},
		"prefetch out of range":     {"-workload", "1p1c", "-prefetch", "70000"},
		"stray argument":            {"-workload", "1p1c", "extra"},
		"negative ack delay":        {"-workload", "slow-consumer", "-ack-delay", "-1ms"},
		"non-numeric size":          {"-workload", "1p1c", "-size", "big"},
		"zero confirm window":       {"-workload", "1p1c-confirm", "-confirm-window", "0"},
		"unparseable url":           {"-workload", "1p1c", "-url", "amqp://%zz"},
		"negative pid":              {"-workload", "1p1c", "-pid", "-3"},
		"no fanout queues":          {"-workload", "fanout", "-fanout-queues", "0"},
		"no callers":                {"-workload", "rpc", "-callers", "0"},
		"no lead":                   {"-workload", "1p1c", "-lead", "0"},
		"no idle connections":       {"-workload", "idle-conns", "-pid", "1", "-conns", "0"},
		"no empty queues requested": {"-workload", "empty-queues", "-pid", "1", "-queues", "0"},
		"unknown queue type":        {"-workload", "persistent", "-queue-type", "stream"},
		"failover without a kill":   {"-workload", "failover"},
		"failover, no kill delay":   {"-workload", "failover", "-kill-cmd", "true", "-kill-after", "0s"},
	}
	for name, args := range bad {
		if _, _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
	cfg, table, err := parseFlags([]string{"-workload", "rpc", "-duration", "3s", "-pid", "42"}, &bytes.Buffer{})
	if err != nil || table != "" || cfg.workload != "rpc" || cfg.duration != 3*time.Second || cfg.brokerPID != 42 {
		t.Fatalf("good flags parsed as %+v, %q, %v", cfg, table, err)
	}
}

func TestRunReportsUsageErrorsWithExitCode(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-workload", "nope"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit code %d for an unknown workload, want 2", code)
	}
	if stdout.Len() != 0 || !strings.Contains(stderr.String(), "unknown -workload") {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestRedactURLHidesThePassword(t *testing.T) {
	got := redactURL("amqp://guest:secret@127.0.0.1:5682/")
	if strings.Contains(got, "secret") || !strings.Contains(got, "127.0.0.1:5682") {
		t.Fatalf("redactURL = %q", got)
	}
}

func TestParseKillLine(t *testing.T) {
	at, what, err := parseKillLine("looking for the leader\nkilled 1700000000123456789 n2 (pid 42)\n")
	if err != nil || at.UnixNano() != 1700000000123456789 || what != "n2 (pid 42)" {
		t.Fatalf("parseKillLine = %v, %q, %v", at.UnixNano(), what, err)
	}
	for _, bad := range []string{"", "nothing killed\n", "killed soon\n", "killed -5\n"} {
		if _, _, err := parseKillLine(bad); err == nil {
			t.Errorf("parseKillLine(%q) accepted", bad)
		}
	}
}

func TestQueueArgs(t *testing.T) {
	if args := (config{}).queueArgs(); args != nil {
		t.Errorf("no -queue-type gave %v, want no arguments", args)
	}
	if args := (config{queueType: "quorum"}).queueArgs(); args["x-queue-type"] != "quorum" {
		t.Errorf("-queue-type quorum gave %v", args)
	}
}
