package datalink

import "sync/atomic"

// Traffic counts what this process's data links carried, for the node's metrics.
type Traffic struct {
	BytesOut, Writes, BytesIn, FramesIn uint64
}

var traffic struct {
	bytesOut, writes, bytesIn, framesIn atomic.Uint64
}

// TrafficStats returns the data-link counters of this process (every link, both directions).
func TrafficStats() Traffic {
	return Traffic{BytesOut: traffic.bytesOut.Load(), Writes: traffic.writes.Load(),
		BytesIn: traffic.bytesIn.Load(), FramesIn: traffic.framesIn.Load()}
}
