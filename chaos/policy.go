package chaos

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// kindTable names every fault kind: its name in logs and schedules, its plural in the
// verdict line, and the name of the action that repairs it in the timeline. A new kind is a new constant and a new row here; the runner, the checker and
// the verdict line need no other change.
var kindTable = []struct {
	kind                 FaultKind
	name, plural, repair string
}{
	{Kill, "kill", "kills", "start"},
	{Pause, "pause", "pauses", "unpause"},
	{Partition, "partition", "partitions", "heal"},
	{Wipe, "wipe", "wipes", "start"},
}

func (k FaultKind) repairAction() string {
	for _, row := range kindTable {
		if row.kind == k {
			return row.repair
		}
	}
	return "repair"
}

func (k FaultKind) String() string {
	for _, row := range kindTable {
		if row.kind == k {
			return row.name
		}
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// Faults counts the faults the nemesis injected, by kind.
type Faults map[FaultKind]int

// Floor is a minimum a run must reach to prove anything: Got(r) must be at least
// Fixed + PerSecond × the run's length in seconds. A broker that nacks every publish loses
// nothing it confirmed; only a floor on what it confirmed turns that run red.
type Floor struct {
	Name      string
	Fixed     float64
	PerSecond float64
	Got       func(Result) float64
}

func (f Floor) want(r Result) float64 { return f.Fixed + f.PerSecond*r.Duration.Seconds() }

// Policy is what a run must reach beyond "nothing lost": floors on its measures and a
// minimum number of faults of every scheduled kind.
type Policy struct {
	Floors []Floor
	// MinFaultsPerKind: every kind the nemesis was scheduled to cause must have been injected
	// at least this often.
	MinFaultsPerKind int
}

// DefaultPolicy is the chaos suite's policy. The confirmed floor is about a twentieth of what
// a 3-node run confirms on a busy 2-core machine (~1000/s, docs/operations.md), so only a
// broker that stopped confirming, or a workload that never ran, falls below it; the same for
// replicated queues alone (225–690/s measured, floor 10/s).
//
// It has no floor on availability: in the runs of 2026-11-30 the share of replicated-queue
// publishes confirmed during kills was 94–99% in some runs and 0–2% in others (replicated
// queues that confirmed nothing for 8–18 s around a kill; docs/operations.md), so no floor CI
// could meet reliably would mean anything yet. QuorumKillAvailability is that floor, for
// cmd/chaos --quorum-kill-availability.
func DefaultPolicy() Policy {
	return Policy{
		Floors: []Floor{
			{Name: "confirmed messages", PerSecond: 50, Got: func(r Result) float64 { return float64(r.Confirmed) }},
			{Name: "confirmed messages of replicated queues", PerSecond: 10, Got: func(r Result) float64 {
				return float64(r.ByType[TypeQuorum].Confirmed)
			}},
			{Name: "rpc calls answered right", Fixed: 1, Got: func(r Result) float64 { return float64(r.RPCOK) }},
		},
		MinFaultsPerKind: 1,
	}
}

// QuorumKillAvailability is a floor on the share of replicated-queue publishes confirmed while
// a kill -9 + restart was in force (issue #10's target is 95%). A run without such publishes
// gets 0: it did not show the queues serving through a kill.
func QuorumKillAvailability(share float64) Floor {
	return Floor{Name: "share of replicated-queue publishes confirmed during kills", Fixed: share, Got: func(r Result) float64 {
		return max(r.AvailabilityOf(Kill, TypeQuorum), 0)
	}}
}

// figure prints a measure the way a reader compares it: counts whole, shares with 3 digits.
func figure(v float64) string {
	if v >= 100 || v == float64(int64(v)) {
		return strconv.FormatFloat(math.Ceil(v), 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// shortfalls lists every floor r does not reach.
func (p Policy) shortfalls(h History, r Result) []string {
	var out []string
	for _, f := range p.Floors {
		if got, want := f.Got(r), f.want(r); got < want {
			out = append(out, fmt.Sprintf("%s: %s < %s (%g + %g/s over %s)", f.Name, figure(got), figure(math.Ceil(want*1000)/1000), f.Fixed, f.PerSecond, r.Duration.Round(time.Second)))
		}
	}
	for _, k := range h.Kinds {
		if got := h.Faults[k]; got < p.MinFaultsPerKind {
			out = append(out, fmt.Sprintf("%s faults injected: %d < %d (every scheduled kind must happen; a longer run?)", k, got, p.MinFaultsPerKind))
		}
	}
	return out
}
