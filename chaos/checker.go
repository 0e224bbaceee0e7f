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
	// StableQueues are queues that exist for the whole run (chaos.q*): a basic.return from
	// one of them is a routing bug, not "no promise".
	StableQueues []string
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
		case s.Outcome == Confirmed && !got:
			r.Lost = append(r.Lost, s)
		case s.Outcome != Confirmed && got:
			r.Recovered++
		}
	}
	sort.Slice(r.Lost, func(i, j int) bool { return lessID(r.Lost[i].ID, r.Lost[j].ID) })

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
	return fmt.Sprintf("chaos: duration=%ds %s fault_errors=%d sent=%d confirmed=%d received=%d "+
		"lost=%d unexpected=%d duplicated=%d returned_stable=%d rpc_ok=%d rpc_timeout=%d rpc_wrong=%d digest=%s",
		int(r.Duration.Round(time.Second)/time.Second), strings.Join(faults, " "), len(r.FaultErrors), r.Sent, r.Confirmed, r.Received,
		len(r.Lost), len(r.Unexpected), r.Duplicated, len(r.ReturnedStable), r.RPCOK, r.RPCTimeout, r.RPCWrong, digest)
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
