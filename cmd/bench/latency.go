package main

import (
	"encoding/binary"
	"math/bits"
	"time"
)

// Latency is kept in a log-linear histogram instead of a slice of samples: a fanout run can
// deliver millions of messages and the benchmark must not itself eat the shared machine's memory.
// Values below linearLimit microseconds are exact; above, every power-of-two range is split into
// subBuckets buckets, so a percentile is off by at most 1/subBuckets (under 0.4%).
const (
	subBucketBits = 8
	subBuckets    = 1 << subBucketBits
	linearLimit   = 2 * subBuckets
	// linearLimit is 2^(subBucketBits+1); ranges start from that exponent.
	firstLogExponent = subBucketBits + 1
	histogramBuckets = linearLimit + (64-firstLogExponent)*subBuckets
)

// latencyHistogram counts microsecond latencies. It is not safe for concurrent use: each
// goroutine records into its own and the results are merged.
type latencyHistogram struct {
	counts [histogramBuckets]uint64
	total  uint64
}

func bucketIndex(micros uint64) int {
	if micros < linearLimit {
		return int(micros)
	}
	exponent := bits.Len64(micros) - 1 // micros is in [2^exponent, 2^(exponent+1))
	shift := exponent - subBucketBits
	sub := int(micros>>uint(shift)) - subBuckets // in [0, subBuckets)
	return linearLimit + (exponent-firstLogExponent)*subBuckets + sub
}

// bucketLowerBound is the smallest value that falls into bucket index.
func bucketLowerBound(index int) uint64 {
	if index < linearLimit {
		return uint64(index)
	}
	offset := index - linearLimit
	exponent := offset/subBuckets + firstLogExponent
	sub := uint64(offset%subBuckets) + subBuckets
	return sub << uint(exponent-subBucketBits)
}

func (h *latencyHistogram) record(d time.Duration) {
	if d < 0 {
		// A clock step cannot happen with monotonic readings, but never index out of range.
		d = 0
	}
	h.counts[bucketIndex(uint64(d/time.Microsecond))]++
	h.total++
}

func (h *latencyHistogram) merge(other *latencyHistogram) {
	for i, c := range other.counts {
		h.counts[i] += c
	}
	h.total += other.total
}

// percentile returns the lower bound of the bucket holding the q-th quantile (0 < q <= 1) in
// microseconds, and false when nothing was recorded.
func (h *latencyHistogram) percentile(q float64) (float64, bool) {
	if h.total == 0 {
		return 0, false
	}
	rank := uint64(q * float64(h.total))
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return float64(bucketLowerBound(i)), true
		}
	}
	return float64(bucketLowerBound(histogramBuckets - 1)), true
}

// fillPercentiles sets p50 and p99 fields when the histogram has samples.
func (h *latencyHistogram) fillPercentiles(p50, p99 **float64) {
	if v, ok := h.percentile(0.50); ok {
		*p50 = num(v)
	}
	if v, ok := h.percentile(0.99); ok {
		*p99 = num(v)
	}
}

// Message bodies start with their send time so the consumer can measure publish → delivery
// latency; publisher and consumer are in this process and share its monotonic clock.
const timestampBytes = 8

var processStart = time.Now()

func stampedBody(size int) []byte {
	body := make([]byte, size)
	binary.BigEndian.PutUint64(body, uint64(time.Since(processStart)))
	return body
}

// bodyAge returns how long ago a stamped body was built, and false for a body this process did
// not stamp (a stray message must not poison the figures).
func bodyAge(body []byte) (time.Duration, bool) {
	if len(body) < timestampBytes {
		return 0, false
	}
	sent := time.Duration(binary.BigEndian.Uint64(body))
	now := time.Since(processStart)
	if sent < 0 || sent > now {
		return 0, false
	}
	return now - sent, true
}
