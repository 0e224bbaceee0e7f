package chaos

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Outcome is what a publisher learned about one message it sent.
type Outcome int

const (
	// Unconfirmed: no answer before the channel or connection went away, or the wait timed
	// out. The message may or may not be in its queue.
	Unconfirmed Outcome = iota
	// Confirmed: basic.ack and no basic.return. The broker promised to keep it.
	Confirmed
	// Nacked: basic.nack. The broker made no promise.
	Nacked
	// Returned: basic.return (mandatory, no route) before the ack: it reached no queue.
	Returned
)

func (o Outcome) String() string {
	switch o {
	case Confirmed:
		return "confirmed"
	case Nacked:
		return "nacked"
	case Returned:
		return "returned"
	default:
		return "unconfirmed"
	}
}

// Sent is one publish attempt of a uniquely numbered message.
type Sent struct {
	ID      string
	Queue   string
	Via     string // node the publisher was connected to
	At      time.Time
	Outcome Outcome
}

// Received is one delivery (basic.deliver or basic.get-ok) a consumer handled.
type Received struct {
	ID          string // message-id; "" for a message that carried none
	Queue       string
	Via         string
	At          time.Time
	Redelivered bool
}

// RPCCall is one RPC call: the result it should have returned and what came back.
type RPCCall struct {
	Want    string
	Got     string
	Replied bool   // false: timed out or failed before any reply
	Detail  string // why it failed, or which server answered
}

// History is everything a run observed.
type History struct {
	Sent     []Sent
	Received []Received
	RPC      []RPCCall
	// Nodes lists every node of the cluster; Digests holds the topology digest each node
	// reported (a node missing from it did not answer).
	Nodes   []string
	Digests map[string]string
	// Crashes describes nodes that died without the nemesis killing them.
	Crashes []string

	// Duration is how long the workload and the nemesis ran; the floors scale with it.
	Duration time.Duration
	// Kinds lists the fault kinds the nemesis was scheduled to cause; Faults counts the ones
	// it injected (and saw take effect); FaultErrors describes every fault it could not inject
	// or repair.
	Kinds       []FaultKind
	Faults      Faults
	FaultErrors []string
	// StableQueues are queues that exist for the whole run (chaos.q*, chaos.qq*): a
	// basic.return from one of them is a routing bug, not "no promise".
	StableQueues []string
	// QuorumQueues are the replicated queues among them; the others are classic.
	QuorumQueues []string
	// Windows are the spans during which a fault was in force.
	Windows []Window
	// Wiped: classic queues whose owner's disk was destroyed; their confirmed messages sent
	// before then may be missing (that is what a classic queue promises). Never a replicated
	// queue: the checker ignores any entry naming one.
	Wiped []WipedQueue
}

// Tally counts publishes and how many of them were confirmed.
type Tally struct{ Sent, Confirmed int }

// Share is Confirmed/Sent, or -1 when nothing was sent.
func (t Tally) Share() float64 {
	if t.Sent == 0 {
		return -1
	}
	return float64(t.Confirmed) / float64(t.Sent)
}

func (t Tally) percent() string {
	if t.Sent == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(100*t.Share(), 'f', 1, 64) + "%"
}

// Result is the checker's verdict.
type Result struct {
	Sent       int // distinct message ids published
	Confirmed  int
	Received   int // distinct message ids received (expected or not)
	Deliveries int // every delivery, duplicates included
	// Recovered: sent, not confirmed, yet received (allowed: the broker may keep what it
	// did not confirm).
	Recovered int
	// Lost: confirmed, never received.
	Lost []Sent
	// Unexpected: received, but never sent, or sent to another queue than it came from.
	Unexpected []Received
	// Duplicated: ids received more than once.
	Duplicated int
	// Suspicious: ids received more than once where more than one copy was not flagged
	// redelivered. A broker may deliver a message again only as a redelivery, so these fail
	// the run.
	Suspicious []string

	RPCOK, RPCTimeout, RPCWrong int
	WrongCalls                  []RPCCall

	DigestEqual bool
	Digests     map[string]string

	Crashes []string

	Duration    time.Duration
	Faults      Faults
	FaultErrors []string
	// ReturnedStable: messages returned unroutable by a queue that always exists.
	ReturnedStable []Sent
	// Shortfalls: each floor of the policy the run did not reach, as "what: got < want".
	Shortfalls []string

	// ByType holds, per queue type (TypeClassic, TypeQuorum), every publish; LostByType the
	// lost ones.
	ByType     map[string]Tally
	LostByType map[string]int
	// LostWiped: confirmed messages of classic queues whose owner was wiped, sent before the
	// wipe and never received: gone with the disk, as documented, so not counted as lost.
	LostWiped []Sent
	// Availability: per queue type, the publishes sent while a fault was in force and how many
	// were confirmed; AvailabilityByKind the same per fault kind.
	Availability       map[string]Tally
	AvailabilityByKind map[FaultKind]map[string]Tally
	// Stalls: per queue type, the longest time one of its queues went without a publish that
	// was confirmed (between the publish times of consecutive confirmed messages, from the
	// run's first publish to the queue's last). A share of publishes hides a publisher that
	// waits seconds for one confirm; this does not.
	Stalls map[string]Stall
}

// Stall is the longest span a queue confirmed nothing that was published in it.
type Stall struct {
	Queue  string
	From   time.Time
	Length time.Duration
}

// AvailabilityOf is the share of publishes to queues of typ confirmed while faults of kind
// were in force (-1 when none was sent then).
func (r Result) AvailabilityOf(kind FaultKind, typ string) float64 {
	return r.AvailabilityByKind[kind][typ].Share()
}

// Check is CheckPolicy with DefaultPolicy.
func Check(h History) (Result, error) { return CheckPolicy(h, DefaultPolicy()) }

// CheckPolicy compares a history's sends with its receipts, tallies its RPC calls and faults,
// compares the nodes' digests and measures the run against p's floors. It fails only on a
// malformed history (an id sent twice or without an id), which is a workload bug, not a
// broker one.
func CheckPolicy(h History, p Policy) (Result, error) {
	r := Result{Duration: h.Duration, Faults: h.Faults, FaultErrors: h.FaultErrors}
	stable := make(map[string]bool, len(h.StableQueues))
	for _, q := range h.StableQueues {
		stable[q] = true
	}
	quorum := make(map[string]bool, len(h.QuorumQueues))
	for _, q := range h.QuorumQueues {
		quorum[q] = true
	}
	typeOf := func(queue string) string {
		if quorum[queue] {
			return TypeQuorum
		}
		return TypeClassic
	}
	// wipedBefore: the latest wipe of each classic queue; a replicated queue is never excused.
	wipedBefore := map[string]time.Time{}
	for _, w := range h.Wiped {
		if !quorum[w.Queue] && w.Before.After(wipedBefore[w.Queue]) {
			wipedBefore[w.Queue] = w.Before
		}
	}
	r.ByType = map[string]Tally{}
	r.LostByType = map[string]int{}
	r.Availability = map[string]Tally{}
	r.AvailabilityByKind = map[FaultKind]map[string]Tally{}
	count := func(m map[string]Tally, typ string, o Outcome) {
		t := m[typ]
		t.Sent++
		if o == Confirmed {
			t.Confirmed++
		}
		m[typ] = t
	}
	sent := make(map[string]Sent, len(h.Sent))
	for _, s := range h.Sent {
		if s.ID == "" {
			return Result{}, errors.New("check history: a sent message has no id")
		}
		if _, dup := sent[s.ID]; dup {
			return Result{}, fmt.Errorf("check history: message %s was sent twice (workload bug)", s.ID)
		}
		sent[s.ID] = s
		if s.Outcome == Confirmed {
			r.Confirmed++
		}
		typ := typeOf(s.Queue)
		count(r.ByType, typ, s.Outcome)
		if k, ok := faultAt(h.Windows, s.At); ok {
			count(r.Availability, typ, s.Outcome)
			if r.AvailabilityByKind[k] == nil {
				r.AvailabilityByKind[k] = map[string]Tally{}
			}
			count(r.AvailabilityByKind[k], typ, s.Outcome)
		}
		if s.Outcome == Returned && stable[s.Queue] {
			r.ReturnedStable = append(r.ReturnedStable, s)
		}
	}
	r.Sent = len(sent)

	type copies struct{ total, fresh int }
	seen := make(map[string]*copies, len(h.Received))
	for _, d := range h.Received {
		r.Deliveries++
		s, ok := sent[d.ID]
		if d.ID == "" || !ok || s.Queue != d.Queue {
			r.Unexpected = append(r.Unexpected, d)
		}
		key := d.ID
		if key == "" {
			// Messages without an id cannot be told apart; each is its own foreign message.
			key = fmt.Sprintf("\x00anon-%d", r.Deliveries)
		}
		c := seen[key]
		if c == nil {
			c = &copies{}
			seen[key] = c
		}
		c.total++
		if !d.Redelivered {
			c.fresh++
		}
	}
	r.Received = len(seen)
	for id, c := range seen {
		if c.total > 1 {
			r.Duplicated++
			if c.fresh > 1 {
				r.Suspicious = append(r.Suspicious, id)
			}
		}
	}
	sort.Strings(r.Suspicious)

	for id, s := range sent {
		_, got := seen[id]
		switch {
		case s.Outcome == Confirmed && !got && s.At.Before(wipedBefore[s.Queue]):
			r.LostWiped = append(r.LostWiped, s)
		case s.Outcome == Confirmed && !got:
			r.Lost = append(r.Lost, s)
			r.LostByType[typeOf(s.Queue)]++
		case s.Outcome != Confirmed && got:
			r.Recovered++
		}
	}
	sort.Slice(r.Lost, func(i, j int) bool { return lessID(r.Lost[i].ID, r.Lost[j].ID) })
	sort.Slice(r.LostWiped, func(i, j int) bool { return lessID(r.LostWiped[i].ID, r.LostWiped[j].ID) })
	r.Stalls = stalls(h.Sent, typeOf)

	for _, c := range h.RPC {
		switch {
		case !c.Replied:
			r.RPCTimeout++
		case c.Got != c.Want:
			r.RPCWrong++
			r.WrongCalls = append(r.WrongCalls, c)
		default:
			r.RPCOK++
		}
	}

	r.Crashes = h.Crashes
	r.Digests = h.Digests
	r.DigestEqual = digestsEqual(h.Nodes, h.Digests)
	r.Shortfalls = p.shortfalls(h, r)
	return r, nil
}

// stalls finds, per queue type, the queue with the longest span without a confirmed publish.
func stalls(sent []Sent, typeOf func(string) string) map[string]Stall {
	var start time.Time
	times := map[string][]time.Time{}
	last := map[string]time.Time{}
	for _, s := range sent {
		if s.At.IsZero() {
			continue
		}
		if start.IsZero() || s.At.Before(start) {
			start = s.At
		}
		if s.At.After(last[s.Queue]) {
			last[s.Queue] = s.At
		}
		if s.Outcome == Confirmed {
			times[s.Queue] = append(times[s.Queue], s.At)
		}
	}
	out := map[string]Stall{}
	for q, end := range last {
		ts := append(times[q], end)
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		prev := start
		for _, t := range ts {
			if gap := t.Sub(prev); gap > out[typeOf(q)].Length {
				out[typeOf(q)] = Stall{Queue: q, From: prev, Length: gap}
			}
			prev = t
		}
	}
	return out
}

// faultAt reports the kind of the fault in force at t, if any.
func faultAt(ws []Window, t time.Time) (FaultKind, bool) {
	for _, w := range ws {
		if !t.Before(w.From) && t.Before(w.To) {
			return w.Kind, true
		}
	}
	return 0, false
}

// digestsEqual: every node reported a digest, and they are all the same.
func digestsEqual(nodes []string, digests map[string]string) bool {
	if len(nodes) == 0 {
		return false
	}
	first, ok := digests[nodes[0]]
	if !ok || first == "" {
		return false
	}
	for _, n := range nodes[1:] {
		if d, ok := digests[n]; !ok || d != first {
			return false
		}
	}
	return true
}

// lessID orders "p3-17" before "p3-100": by publisher, then by number.
func lessID(a, b string) bool {
	pa, na, oka := splitID(a)
	pb, nb, okb := splitID(b)
	if !oka || !okb || pa != pb {
		return a < b
	}
	return na < nb
}

func splitID(id string) (string, int, bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil {
		return "", 0, false
	}
	return id[:i], n, true
}

// OK is the run's verdict: nothing lost, nothing foreign, no duplicate that was not a
// redelivery, no wrong RPC result, one topology on every node, no node that died by itself,
// no return from a queue that always exists, every fault injected as scheduled, and every
// floor reached (a run that did too little proves nothing, so it does not pass).
func (r Result) OK() bool {
	return len(r.Lost) == 0 && len(r.Unexpected) == 0 && len(r.Suspicious) == 0 &&
		r.RPCWrong == 0 && r.DigestEqual && len(r.Crashes) == 0 &&
		len(r.ReturnedStable) == 0 && len(r.FaultErrors) == 0 && len(r.Shortfalls) == 0
}

// FinalLine is the run's last line, in the exact format scripts and CI parse: one
// "<kind plural>=N" per known fault kind, in kindTable order.
func (r Result) FinalLine() string {
	digest := "equal"
	if !r.DigestEqual {
		digest = "DIFFERENT"
	}
	faults := make([]string, 0, len(kindTable))
	for _, k := range kindTable {
		faults = append(faults, fmt.Sprintf("%s=%d", k.plural, r.Faults[k.kind]))
	}
	all := Tally{}
	for _, t := range r.Availability {
		all.Sent += t.Sent
		all.Confirmed += t.Confirmed
	}
	return fmt.Sprintf("chaos: duration=%ds %s fault_errors=%d sent=%d confirmed=%d received=%d "+
		"lost=%d unexpected=%d duplicated=%d returned_stable=%d rpc_ok=%d rpc_timeout=%d rpc_wrong=%d digest=%s "+
		"confirmed_classic=%d confirmed_quorum=%d lost_classic=%d lost_quorum=%d lost_wiped_classic=%d "+
		"availability=%s availability_classic=%s availability_quorum=%s availability_quorum_kill=%s",
		int(r.Duration.Round(time.Second)/time.Second), strings.Join(faults, " "), len(r.FaultErrors), r.Sent, r.Confirmed, r.Received,
		len(r.Lost), len(r.Unexpected), r.Duplicated, len(r.ReturnedStable), r.RPCOK, r.RPCTimeout, r.RPCWrong, digest,
		r.ByType[TypeClassic].Confirmed, r.ByType[TypeQuorum].Confirmed, r.LostByType[TypeClassic], r.LostByType[TypeQuorum], len(r.LostWiped),
		all.percent(), r.Availability[TypeClassic].percent(), r.Availability[TypeQuorum].percent(), r.AvailabilityByKind[Kill][TypeQuorum].percent())
}

// maxListed bounds how many ids a summary line names.
const maxListed = 20

// Summary explains the verdict in lines meant for the log before the final line: what failed
// and enough detail (queue, node, time, ids) to start looking for the cause.
func (r Result) Summary() []string {
	var out []string
	out = append(out, fmt.Sprintf("checker: %d deliveries of %d distinct ids; %d unconfirmed messages were received anyway (allowed)",
		r.Deliveries, r.Received, r.Recovered))
	if len(r.Lost) > 0 {
		byQueue := map[string][]Sent{}
		for _, s := range r.Lost {
			byQueue[s.Queue] = append(byQueue[s.Queue], s)
		}
		queues := make([]string, 0, len(byQueue))
		for q := range byQueue {
			queues = append(queues, q)
		}
		sort.Strings(queues)
		for _, q := range queues {
			lost := byQueue[q]
			ids := make([]string, 0, min(len(lost), maxListed))
			for _, s := range lost[:min(len(lost), maxListed)] {
				ids = append(ids, fmt.Sprintf("%s(via %s at %s)", s.ID, s.Via, s.At.Format("15:04:05.000")))
			}
			out = append(out, fmt.Sprintf("checker: FAIL lost %d confirmed messages of queue %s: %s", len(lost), q, strings.Join(ids, " ")))
		}
	}
	for _, k := range kindTable {
		byType := r.AvailabilityByKind[k.kind]
		if len(byType) == 0 {
			continue
		}
		c, q := byType[TypeClassic], byType[TypeQuorum]
		out = append(out, fmt.Sprintf("checker: publishes confirmed while %s were in force: classic %s (%d of %d), quorum %s (%d of %d)",
			k.plural, c.percent(), c.Confirmed, c.Sent, q.percent(), q.Confirmed, q.Sent))
	}
	for _, typ := range []string{TypeClassic, TypeQuorum} {
		if st, ok := r.Stalls[typ]; ok {
			out = append(out, fmt.Sprintf("checker: longest time a %s queue confirmed nothing: %s, %s from %s",
				typ, st.Length.Round(10*time.Millisecond), st.Queue, st.From.Format("15:04:05.000")))
		}
	}
	if len(r.LostWiped) > 0 {
		byQueue := map[string]int{}
		for _, s := range r.LostWiped {
			byQueue[s.Queue]++
		}
		out = append(out, fmt.Sprintf("checker: %d confirmed messages of classic queues went with their owner's wiped disk (allowed for classic queues): %v",
			len(r.LostWiped), byQueue))
	}
	if len(r.Unexpected) > 0 {
		ids := make([]string, 0, maxListed)
		for _, d := range r.Unexpected[:min(len(r.Unexpected), maxListed)] {
			ids = append(ids, fmt.Sprintf("%q(on %s via %s)", d.ID, d.Queue, d.Via))
		}
		out = append(out, fmt.Sprintf("checker: FAIL %d unexpected deliveries (never sent, or sent to another queue): %s",
			len(r.Unexpected), strings.Join(ids, " ")))
	}
	if r.Duplicated > 0 {
		out = append(out, fmt.Sprintf("checker: %d ids were delivered more than once; %d of them as redeliveries only (allowed)",
			r.Duplicated, r.Duplicated-len(r.Suspicious)))
	}
	if len(r.Suspicious) > 0 {
		out = append(out, fmt.Sprintf("checker: FAIL %d ids delivered twice without the redelivered flag (counts as a failure): %s",
			len(r.Suspicious), strings.Join(r.Suspicious[:min(len(r.Suspicious), maxListed)], " ")))
	}
	if r.RPCWrong > 0 {
		for _, c := range r.WrongCalls[:min(len(r.WrongCalls), maxListed)] {
			out = append(out, fmt.Sprintf("checker: FAIL rpc call wanted %s got %s (%s)", c.Want, c.Got, c.Detail))
		}
	}
	if !r.DigestEqual {
		nodes := make([]string, 0, len(r.Digests))
		for n := range r.Digests {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		parts := make([]string, 0, len(nodes))
		for _, n := range nodes {
			parts = append(parts, n+"="+r.Digests[n])
		}
		out = append(out, "checker: FAIL topology digests differ or a node did not answer: "+strings.Join(parts, " "))
	}
	for _, c := range r.Crashes {
		out = append(out, "checker: FAIL node crash: "+c)
	}
	if len(r.ReturnedStable) > 0 {
		ids := make([]string, 0, maxListed)
		for _, s := range r.ReturnedStable[:min(len(r.ReturnedStable), maxListed)] {
			ids = append(ids, fmt.Sprintf("%s(on %s via %s at %s)", s.ID, s.Queue, s.Via, s.At.Format("15:04:05.000")))
		}
		out = append(out, fmt.Sprintf("checker: FAIL %d messages returned unroutable by queues that always exist: %s",
			len(r.ReturnedStable), strings.Join(ids, " ")))
	}
	for _, e := range r.FaultErrors {
		out = append(out, "checker: FAIL fault not injected: "+e)
	}
	for _, s := range r.Shortfalls {
		out = append(out, "checker: FAIL run below its floor: "+s)
	}
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	out = append(out, "checker: verdict "+verdict+" (fails on lost, unexpected, non-redelivered duplicates, wrong rpc results, "+
		"differing digests, node crashes, returns from stable queues, faults not injected, and runs below a floor)")
	return out
}
