package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// cleanHistory: a 2-second run with two kinds of fault, each injected; two queues that always
// exist, q1 classic and q2 replicated, 50 confirmed messages each, published during a kill,
// every one received once, a few unconfirmed ones (one of them received anyway) and one
// returned by a queue that may not exist; good RPC calls, equal digests.
func cleanHistory() History {
	var h History
	for _, q := range []string{"q1", "q2"} {
		for i := 1; i <= 50; i++ {
			id := fmt.Sprintf("p-%s-%d", q, i)
			h.Sent = append(h.Sent, Sent{ID: id, Queue: q, Via: "n2", At: t0, Outcome: Confirmed})
			h.Received = append(h.Received, Received{ID: id, Queue: q, Via: "n3", At: t0})
		}
		h.Sent = append(h.Sent,
			Sent{ID: "p-" + q + "-51", Queue: q, Outcome: Nacked},
			Sent{ID: "p-" + q + "-52", Queue: q, Outcome: Unconfirmed},
			Sent{ID: "p-" + q + "-53", Queue: q + ".tmp", Outcome: Returned})
	}
	h.Received = append(h.Received, Received{ID: "p-q1-52", Queue: "q1", Redelivered: true})
	h.RPC = []RPCCall{{Want: "3", Got: "3", Replied: true}, {Want: "5", Replied: false}}
	h.Nodes = []string{"n1", "n2", "n3"}
	h.Digests = map[string]string{"n1": "abc", "n2": "abc", "n3": "abc"}
	h.Duration = 2 * time.Second
	h.Kinds = []FaultKind{Kill, Pause}
	h.Faults = Faults{Kill: 2, Pause: 3}
	h.StableQueues = []string{"q1", "q2"}
	h.QuorumQueues = []string{"q2"}
	h.Windows = []Window{{Kind: Kill, From: t0, To: t0.Add(time.Second)}}
	return h
}

func mustCheck(t *testing.T, h History) Result {
	t.Helper()
	r, err := Check(h)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCleanHistoryPasses(t *testing.T) {
	r := mustCheck(t, cleanHistory())
	if !r.OK() {
		t.Fatalf("clean history failed: %v", r.Summary())
	}
	if r.Sent != 106 || r.Confirmed != 100 || r.Received != 101 || r.Recovered != 1 {
		t.Fatalf("counts: sent=%d confirmed=%d received=%d recovered=%d", r.Sent, r.Confirmed, r.Received, r.Recovered)
	}
	if r.RPCOK != 1 || r.RPCTimeout != 1 || r.RPCWrong != 0 {
		t.Fatalf("rpc: ok=%d timeout=%d wrong=%d", r.RPCOK, r.RPCTimeout, r.RPCWrong)
	}
	want := "chaos: duration=2s kills=2 pauses=3 partitions=0 wipes=0 fault_errors=0 sent=106 confirmed=100 received=101 lost=0 unexpected=0 " +
		"duplicated=0 returned_stable=0 rpc_ok=1 rpc_timeout=1 rpc_wrong=0 digest=equal " +
		"confirmed_classic=50 confirmed_quorum=50 lost_classic=0 lost_quorum=0 lost_wiped_classic=0 " +
		"availability=100.0% availability_classic=100.0% availability_quorum=100.0% availability_quorum_kill=100.0%"
	if got := r.FinalLine(); got != want {
		t.Fatalf("final line\n got %s\nwant %s", got, want)
	}
}

func TestLossIsCaught(t *testing.T) {
	h := cleanHistory()
	// Drop the receipt of confirmed message p-q2-17.
	for i, d := range h.Received {
		if d.ID == "p-q2-17" {
			h.Received = append(h.Received[:i], h.Received[i+1:]...)
			break
		}
	}
	r := mustCheck(t, h)
	if r.OK() || len(r.Lost) != 1 || r.Lost[0].ID != "p-q2-17" || r.Lost[0].Queue != "q2" {
		t.Fatalf("lost = %+v, ok = %v", r.Lost, r.OK())
	}
	if !strings.Contains(r.FinalLine(), " lost=1 ") {
		t.Fatalf("final line: %s", r.FinalLine())
	}
	if !strings.Contains(strings.Join(r.Summary(), "\n"), "lost 1 confirmed messages of queue q2: p-q2-17") {
		t.Fatalf("summary does not name the lost message: %v", r.Summary())
	}
}

func TestUnconfirmedNeverReceivedIsNotLost(t *testing.T) {
	h := cleanHistory()
	h.Sent = append(h.Sent, Sent{ID: "p-q1-99", Queue: "q1", Outcome: Nacked})
	if r := mustCheck(t, h); !r.OK() || len(r.Lost) != 0 {
		t.Fatalf("a nacked message counted as lost: %v", r.Summary())
	}
}

func TestForeignMessageIsCaught(t *testing.T) {
	for name, d := range map[string]Received{
		"never sent":    {ID: "p-q9-1", Queue: "q1"},
		"no id":         {ID: "", Queue: "q1"},
		"another queue": {ID: "p-q1-3", Queue: "q2", Redelivered: true},
	} {
		t.Run(name, func(t *testing.T) {
			h := cleanHistory()
			h.Received = append(h.Received, d)
			r := mustCheck(t, h)
			if r.OK() || len(r.Unexpected) != 1 || r.Unexpected[0] != d {
				t.Fatalf("unexpected = %+v, ok = %v", r.Unexpected, r.OK())
			}
		})
	}
}

func TestRedeliveredDuplicateIsCountedNotFailed(t *testing.T) {
	h := cleanHistory()
	h.Received = append(h.Received, Received{ID: "p-q1-7", Queue: "q1", Redelivered: true})
	r := mustCheck(t, h)
	if !r.OK() || r.Duplicated != 1 || len(r.Suspicious) != 0 {
		t.Fatalf("duplicated=%d suspicious=%v ok=%v", r.Duplicated, r.Suspicious, r.OK())
	}
	if !strings.Contains(r.FinalLine(), " duplicated=1 ") {
		t.Fatalf("final line: %s", r.FinalLine())
	}
}

func TestDuplicateWithoutRedeliveredFlagFails(t *testing.T) {
	h := cleanHistory()
	// The second copy arrives first in the history and is the unflagged one: order must not
	// matter, only that two copies claim to be first deliveries.
	h.Received = append([]Received{{ID: "p-q2-30", Queue: "q2"}}, h.Received...)
	r := mustCheck(t, h)
	if r.OK() || r.Duplicated != 1 || len(r.Suspicious) != 1 || r.Suspicious[0] != "p-q2-30" {
		t.Fatalf("duplicated=%d suspicious=%v ok=%v", r.Duplicated, r.Suspicious, r.OK())
	}
}

func TestWrongRPCResultFails(t *testing.T) {
	h := cleanHistory()
	h.RPC = append(h.RPC, RPCCall{Want: "7", Got: "8", Replied: true, Detail: "server s2"})
	r := mustCheck(t, h)
	if r.OK() || r.RPCWrong != 1 || r.WrongCalls[0].Got != "8" {
		t.Fatalf("rpc wrong=%d ok=%v", r.RPCWrong, r.OK())
	}
}

func TestDigests(t *testing.T) {
	for name, tc := range map[string]struct {
		digests map[string]string
		equal   bool
	}{
		"equal":     {map[string]string{"n1": "a", "n2": "a", "n3": "a"}, true},
		"different": {map[string]string{"n1": "a", "n2": "b", "n3": "a"}, false},
		"missing":   {map[string]string{"n1": "a", "n2": "a"}, false},
		"empty":     {map[string]string{"n1": "", "n2": "", "n3": ""}, false},
	} {
		t.Run(name, func(t *testing.T) {
			h := cleanHistory()
			h.Digests = tc.digests
			r := mustCheck(t, h)
			if r.DigestEqual != tc.equal || r.OK() != tc.equal {
				t.Fatalf("digest equal = %v, ok = %v", r.DigestEqual, r.OK())
			}
			wantWord := " digest=equal "
			if !tc.equal {
				wantWord = " digest=DIFFERENT "
			}
			if !strings.Contains(r.FinalLine(), wantWord) {
				t.Fatalf("final line: %s", r.FinalLine())
			}
		})
	}
}

func TestMalformedHistoryIsAnError(t *testing.T) {
	h := cleanHistory()
	h.Sent = append(h.Sent, h.Sent[0])
	if _, err := Check(h); err == nil || !strings.Contains(err.Error(), "sent twice") {
		t.Fatalf("id sent twice: err = %v", err)
	}
	h = cleanHistory()
	h.Sent = append(h.Sent, Sent{Queue: "q1"})
	if _, err := Check(h); err == nil {
		t.Fatal("a sent message without id was accepted")
	}
}

func TestLostOrderedByNumber(t *testing.T) {
	var h History
	for _, n := range []int{100, 9, 17} {
		h.Sent = append(h.Sent, Sent{ID: fmt.Sprintf("p3-%d", n), Queue: "q", Outcome: Confirmed})
	}
	r := mustCheck(t, h)
	got := []string{r.Lost[0].ID, r.Lost[1].ID, r.Lost[2].ID}
	if strings.Join(got, ",") != "p3-9,p3-17,p3-100" {
		t.Fatalf("lost order: %v", got)
	}
}

func TestNodeCrashFails(t *testing.T) {
	h := cleanHistory()
	h.Crashes = []string{"n1 was down at 11:40:55.000 though the nemesis had not left it down"}
	r := mustCheck(t, h)
	if r.OK() {
		t.Fatal("a run with a crashed node passed")
	}
	if !strings.Contains(strings.Join(r.Summary(), "\n"), "FAIL node crash: n1 was down") {
		t.Fatalf("summary does not report the crash: %v", r.Summary())
	}
}

// A run that did too little proves nothing: a broker that nacks every publish, a nemesis
// that never got to a kind of fault, an RPC load that never got an answer, a fault the script
// could not inject, each fails the run although nothing was lost.
func TestRunsBelowAFloorFail(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(*History)
		want   string
	}{
		"every publish nacked": {func(h *History) {
			for i := range h.Sent {
				if h.Sent[i].Outcome == Confirmed {
					h.Sent[i].Outcome = Nacked
				}
			}
		}, "run below its floor: confirmed messages: 0 < 100"},
		"too few confirmed for the run's length": {func(h *History) { h.Duration = 3 * time.Second },
			"run below its floor: confirmed messages: 100 < 150"},
		"no pause injected": {func(h *History) { h.Faults = Faults{Kill: 4} },
			"run below its floor: pause faults injected: 0 < 1"},
		"no fault at all": {func(h *History) { h.Faults = nil }, "kill faults injected: 0 < 1"},
		"replicated queues confirm too little": {func(h *History) { h.Duration = 6 * time.Second },
			"run below its floor: confirmed messages of replicated queues: 50 < 60"},
		"no rpc answered": {func(h *History) {
			for i := range h.RPC {
				h.RPC[i].Replied = false
			}
		}, "run below its floor: rpc calls answered right: 0 < 1"},
		"a fault not injected": {func(h *History) {
			h.FaultErrors = []string{"kill n2 for 3s after 4s: no effect: n2 still answers its API 5s after the kill"}
		}, "FAIL fault not injected: kill n2"},
		"a return from a stable queue": {func(h *History) {
			h.Sent = append(h.Sent, Sent{ID: "p-q1-60", Queue: "q1", Via: "n3", At: t0, Outcome: Returned})
		}, "FAIL 1 messages returned unroutable by queues that always exist: p-q1-60(on q1 via n3"},
	} {
		t.Run(name, func(t *testing.T) {
			h := cleanHistory()
			tc.change(&h)
			r := mustCheck(t, h)
			if r.OK() {
				t.Fatalf("passed: %v", r.Summary())
			}
			if sum := strings.Join(r.Summary(), "\n"); !strings.Contains(sum, tc.want) {
				t.Fatalf("summary does not say %q:\n%s", tc.want, sum)
			}
			if !strings.Contains(strings.Join(r.Summary(), "\n"), "checker: verdict FAIL") {
				t.Fatalf("verdict: %v", r.Summary())
			}
		})
	}
}

// A return from a queue that may be gone (deleted, never declared) makes no promise and is
// not a failure; the final line counts only returns from stable queues.
func TestReturnFromOtherQueueIsAllowed(t *testing.T) {
	h := cleanHistory()
	r := mustCheck(t, h)
	if !r.OK() || len(r.ReturnedStable) != 0 {
		t.Fatalf("returns from q1.tmp/q2.tmp failed the run: %v", r.Summary())
	}
	h.Sent = append(h.Sent, Sent{ID: "p-q2-70", Queue: "q2", Outcome: Returned})
	if r := mustCheck(t, h); !strings.Contains(r.FinalLine(), " returned_stable=1 ") {
		t.Fatalf("final line: %s", r.FinalLine())
	}
}

// A policy is data: a new floor (say, an availability share) is a new row.
func TestPolicyFloorsAreData(t *testing.T) {
	p := DefaultPolicy()
	p.Floors = append(p.Floors, Floor{Name: "availability", Fixed: 0.99, Got: func(r Result) float64 {
		return float64(r.Confirmed) / float64(r.Sent)
	}})
	r, err := CheckPolicy(cleanHistory(), p)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || len(r.Shortfalls) != 1 || !strings.HasPrefix(r.Shortfalls[0], "availability: 0.943") {
		t.Fatalf("shortfalls %v", r.Shortfalls)
	}
}

// TestAvailabilityAndLossPerQueueType: q2 is replicated; publishes inside a kill window and a
// pause window count towards availability per type and kind, those outside do not; a lost
// replicated message shows as lost_quorum.
func TestAvailabilityAndLossPerQueueType(t *testing.T) {
	h := cleanHistory()
	h.QuorumQueues = []string{"q2"}
	// q1 (classic) during the kill: 2 confirmed, 2 nacked; q2 (quorum): 3 confirmed, 1 nacked.
	// During the pause q2: 1 confirmed. One q2 message outside any window is nacked.
	kill := Window{Kind: Kill, From: t0.Add(time.Second), To: t0.Add(3 * time.Second)}
	pause := Window{Kind: Pause, From: t0.Add(5 * time.Second), To: t0.Add(6 * time.Second)}
	h.Windows = []Window{kill, pause}
	add := func(id, q string, at time.Time, o Outcome) {
		h.Sent = append(h.Sent, Sent{ID: id, Queue: q, At: at, Outcome: o})
		if o == Confirmed {
			h.Received = append(h.Received, Received{ID: id, Queue: q, At: at})
		}
	}
	in := t0.Add(2 * time.Second)
	add("w-1", "q1", in, Confirmed)
	add("w-2", "q1", in, Confirmed)
	add("w-3", "q1", in, Nacked)
	add("w-4", "q1", in, Unconfirmed)
	add("w-5", "q2", in, Confirmed)
	add("w-6", "q2", in, Confirmed)
	add("w-7", "q2", in, Confirmed)
	add("w-8", "q2", in, Nacked)
	add("w-9", "q2", t0.Add(5500*time.Millisecond), Confirmed)
	add("w-10", "q2", kill.To, Nacked) // the window is over when the repair is done
	// A confirmed replicated message never received.
	h.Sent = append(h.Sent, Sent{ID: "w-11", Queue: "q2", At: t0, Outcome: Confirmed})
	r := mustCheck(t, h)
	if r.OK() || r.LostByType[TypeQuorum] != 1 || r.LostByType[TypeClassic] != 0 {
		t.Fatalf("lost by type %v, ok %v", r.LostByType, r.OK())
	}
	if got := r.AvailabilityByKind[Kill]; got[TypeClassic] != (Tally{Sent: 4, Confirmed: 2}) || got[TypeQuorum] != (Tally{Sent: 4, Confirmed: 3}) {
		t.Fatalf("availability during kills: %v", got)
	}
	if got := r.Availability[TypeQuorum]; got != (Tally{Sent: 5, Confirmed: 4}) {
		t.Fatalf("quorum availability over all faults: %v", got)
	}
	if r.AvailabilityOf(Kill, TypeQuorum) != 0.75 || r.AvailabilityOf(Partition, TypeQuorum) != -1 {
		t.Fatalf("AvailabilityOf: %v %v", r.AvailabilityOf(Kill, TypeQuorum), r.AvailabilityOf(Partition, TypeQuorum))
	}
	// q2's confirmed publishes are at t0 (cleanHistory), in+... and t0+5.5s; its last publish
	// at kill.To (t0+3s) precedes the last confirmed one, so its longest gap is 3.5 s.
	if st := r.Stalls[TypeQuorum]; st.Queue != "q2" || st.Length != 3500*time.Millisecond || !st.From.Equal(in) {
		t.Fatalf("quorum stall: %+v", st)
	}
	line := r.FinalLine()
	for _, want := range []string{" lost=1 ", " lost_classic=0 ", " lost_quorum=1 ", " confirmed_quorum=55 ",
		" availability=66.7% ", " availability_classic=50.0% ", " availability_quorum=80.0% ", " availability_quorum_kill=75.0%"} {
		if !strings.Contains(line+" ", want) {
			t.Fatalf("final line lacks %q: %s", want, line)
		}
	}
}

// TestWipeExcusesOnlyClassicLossesBeforeIt: a wipe destroys a classic queue's confirmed
// messages sent before it (counted apart, not lost); one sent after it, and any replicated
// queue's, are still lost.
func TestWipeExcusesOnlyClassicLossesBeforeIt(t *testing.T) {
	h := cleanHistory()
	h.QuorumQueues = []string{"q2"}
	wipe := t0.Add(10 * time.Second)
	h.Wiped = []WipedQueue{{Queue: "q1", Before: wipe}, {Queue: "q2", Before: wipe}}
	h.Sent = append(h.Sent,
		Sent{ID: "x-1", Queue: "q1", At: wipe.Add(-time.Second), Outcome: Confirmed},
		Sent{ID: "x-2", Queue: "q1", At: wipe.Add(time.Second), Outcome: Confirmed},
		Sent{ID: "x-3", Queue: "q2", At: wipe.Add(-time.Second), Outcome: Confirmed})
	r := mustCheck(t, h)
	if len(r.LostWiped) != 1 || r.LostWiped[0].ID != "x-1" {
		t.Fatalf("lost with the wiped disk: %v", r.LostWiped)
	}
	if len(r.Lost) != 2 || r.Lost[0].ID != "x-2" || r.Lost[1].ID != "x-3" || r.OK() {
		t.Fatalf("lost: %v ok %v", r.Lost, r.OK())
	}
	if !strings.Contains(r.FinalLine(), " lost_classic=1 lost_quorum=1 lost_wiped_classic=1 ") {
		t.Fatalf("final line: %s", r.FinalLine())
	}
	// Without the later losses the run passes: a wiped classic queue's loss is its promise.
	h.Sent = h.Sent[:len(h.Sent)-2]
	if r := mustCheck(t, h); !r.OK() || len(r.LostWiped) != 1 {
		t.Fatalf("only the wiped classic loss left: ok %v, summary %v", r.OK(), r.Summary())
	}
}

// The availability floor, off by default, fails a run whose replicated queues confirmed too
// small a share of their publishes during kills, and passes one that confirmed enough.
func TestQuorumKillAvailabilityFloor(t *testing.T) {
	p := DefaultPolicy()
	p.Floors = append(p.Floors, QuorumKillAvailability(0.8))
	h := cleanHistory()
	h.Duration = time.Second // the nacks below keep the run above the other floors
	if r, err := CheckPolicy(h, p); err != nil || !r.OK() {
		t.Fatalf("every replicated publish confirmed during the kill: err %v, %v", err, r.Summary())
	}
	for i := range h.Sent {
		if _, n, _ := splitID(h.Sent[i].ID); h.Sent[i].Queue == "q2" && n > 30 {
			h.Sent[i].Outcome = Nacked
		}
	}
	if r := mustCheck(t, h); !r.OK() {
		t.Fatalf("the default policy has no availability floor: %v", r.Shortfalls)
	}
	r, err := CheckPolicy(h, p)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || len(r.Shortfalls) != 1 || !strings.HasPrefix(r.Shortfalls[0], "share of replicated-queue publishes confirmed during kills: 0.6 < 0.8") {
		t.Fatalf("shortfalls %v", r.Shortfalls)
	}
	h.Windows = nil
	if r, _ := CheckPolicy(h, p); r.OK() {
		t.Fatal("a run without replicated publishes during kills passed the floor")
	}
}
