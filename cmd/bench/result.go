package main

import "math"

// result is one JSON line of output. Optional figures are pointers so that a measured zero is
// printed while a figure the workload does not produce is left out.
type result struct {
	Workload    string  `json:"workload"`
	Broker      string  `json:"broker,omitempty"`
	BrokerURL   string  `json:"broker_url"`
	DurationSec float64 `json:"duration_s"`
	SizeBytes   int     `json:"size_bytes,omitempty"`

	MsgsPerSec      *float64 `json:"msgs_per_sec,omitempty"`
	OpsPerSec       *float64 `json:"ops_per_sec,omitempty"`
	PublishedPerSec *float64 `json:"published_per_sec,omitempty"`
	P50Micros       *float64 `json:"p50_us,omitempty"`
	P99Micros       *float64 `json:"p99_us,omitempty"`
	// Confirm latency is publish → basic.ack, separate from the end-to-end latency above.
	ConfirmP50Micros *float64 `json:"confirm_p50_us,omitempty"`
	ConfirmP99Micros *float64 `json:"confirm_p99_us,omitempty"`

	Published *int64 `json:"published,omitempty"`
	Delivered *int64 `json:"delivered,omitempty"`
	Nacked    *int64 `json:"nacked,omitempty"`
	// BlockedNotices counts connection.blocked frames the publisher saw: RabbitMQ's flow control.
	BlockedNotices *int64 `json:"blocked_notices,omitempty"`

	StartRSSMB *float64 `json:"start_rss_mb,omitempty"`
	PeakRSSMB  *float64 `json:"peak_rss_mb,omitempty"`
	FinalRSSMB *float64 `json:"final_rss_mb,omitempty"`
	// VmHWMMB is the kernel's high-water mark over the broker's whole life, not only this run.
	VmHWMMB *float64 `json:"vm_hwm_mb,omitempty"`

	ConnsOpened          *int     `json:"conns_opened,omitempty"`
	RSSDeltaMBPer1kConns *float64 `json:"rss_delta_mb_per_1000_conns,omitempty"`
	QueuesDeclared       *int     `json:"queues_declared,omitempty"`
	RSSDeltaMBPer10kQ    *float64 `json:"rss_delta_mb_per_10000_queues,omitempty"`
	RSSAfterCleanupMB    *float64 `json:"rss_after_cleanup_mb,omitempty"`

	// FailoverMillis is the failover workload's kill → first confirm of a publish sent after the
	// kill; ConfirmGapMillis is the last confirm before the kill → that same confirm.
	FailoverMillis   *float64 `json:"failover_ms,omitempty"`
	ConfirmGapMillis *float64 `json:"confirm_gap_ms,omitempty"`

	// Note explains a figure measured under a limit (for example fewer connections than asked).
	Note  string `json:"note,omitempty"`
	Error string `json:"error,omitempty"`
}

// addRSS copies the sampler's figures into the result.
func (r *result) addRSS(s rssStats) {
	if s.samples == 0 {
		return
	}
	r.StartRSSMB = mb(s.startKB)
	r.PeakRSSMB = mb(s.peakKB)
	r.FinalRSSMB = mb(s.finalKB)
	if s.hwmKB > 0 {
		r.VmHWMMB = mb(s.hwmKB)
	}
}

func round(v float64, decimals int) float64 {
	scale := math.Pow(10, float64(decimals))
	return math.Round(v*scale) / scale
}

// num rounds a figure for printing and returns it as an optional field.
func num(v float64) *float64 {
	r := round(v, 1)
	return &r
}

func count(v int64) *int64 { return &v }

func mb(kB int64) *float64 {
	r := round(float64(kB)/1024, 1)
	return &r
}

// perSecond divides a count by the elapsed seconds of a measurement window.
func perSecond(n int64, elapsedSec float64) *float64 {
	if elapsedSec <= 0 {
		return num(0)
	}
	return num(float64(n) / elapsedSec)
}
