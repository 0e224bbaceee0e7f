package datalink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPublishReply(t *testing.T) {
	fb := newFakeBroker("q1", "q2")
	_, p := pair(t, fb, newRecorder())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	rejected, err := p.Publish(ctx, []string{"q1", "q2"}, []byte("hello"), true)
	if err != nil || rejected {
		t.Fatalf("publish to existing queues: rejected=%v err=%v", rejected, err)
	}
	if r1, _ := fb.counts("q1"); r1 != 1 {
		t.Fatalf("q1 has %d ready, want 1", r1)
	}
	if r2, _ := fb.counts("q2"); r2 != 1 {
		t.Fatalf("q2 has %d ready, want 1", r2)
	}
	rejected, err = p.Publish(ctx, []string{"q1", "missing"}, []byte("x"), false)
	if err != nil || !rejected {
		t.Fatalf("publish to a missing queue: rejected=%v err=%v, want rejected", rejected, err)
	}
	if p.RemoteID() != "owner" {
		t.Fatalf("RemoteID = %q", p.RemoteID())
	}
}

func TestPublishTenThousandInOrder(t *testing.T) {
	fb := newFakeBroker("q")
	_, p := pair(t, fb, newRecorder())
	const n = 10000
	var order []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		p.PublishAsync([]string{"q"}, []byte(strconv.Itoa(i)), false, func(rejected bool, err error) {
			if err != nil || rejected {
				t.Errorf("publish %d: rejected=%v err=%v", i, rejected, err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("callback %d was for publish %d: callbacks out of order", i, v)
		}
	}
	_, _, published := fb.snapshot()
	if len(published) != n {
		t.Fatalf("owner got %d publishes, want %d", len(published), n)
	}
	for i, body := range published {
		if body != strconv.Itoa(i) {
			t.Fatalf("owner got %q at position %d: publishes out of order", body, i)
		}
	}
}

// The owner answers publishes from other goroutines in a scrambled order; the publisher must
// still see its callbacks in publish order.
func TestAsyncCallbacksInOrderWhenOwnerRepliesOutOfOrder(t *testing.T) {
	fb := newFakeBroker("q")
	fb.replyLater = true
	_, p := pair(t, fb, newRecorder())
	const n = 2000
	got := make(chan int, n)
	for i := range n {
		p.PublishAsync([]string{"q"}, []byte(strconv.Itoa(i)), true, func(rejected bool, err error) {
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
			}
			got <- i
		})
	}
	for want := range n {
		select {
		case i := <-got:
			if i != want {
				t.Fatalf("callback for publish %d arrived when %d was due", i, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("callback %d never arrived", want)
		}
	}
	fb.replyWG.Wait()
}

func publishN(t *testing.T, p *Peer, queue string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range n {
		if rejected, err := p.Publish(ctx, []string{queue}, []byte(fmt.Sprintf("m%d", i)), false); err != nil || rejected {
			t.Fatalf("publish %d: rejected=%v err=%v", i, rejected, err)
		}
	}
}

func TestRemoteConsumeWithinPrefetchAckAndRequeue(t *testing.T) {
	fb := newFakeBroker("q")
	rec := newRecorder()
	_, p := pair(t, fb, rec)
	publishN(t, p, "q", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const id = 7
	if err := p.Consume(ctx, id, "q", 5, false, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "5 deliveries", 5*time.Second, func() bool { return len(rec.got(id)) == 5 })
	time.Sleep(100 * time.Millisecond)
	if n := len(rec.got(id)); n != 5 {
		t.Fatalf("%d deliveries in flight with prefetch 5", n)
	}
	for i, d := range rec.got(id) {
		if string(d.Msg) != fmt.Sprintf("m%d", i) || d.Redelivered {
			t.Fatalf("delivery %d = %q redelivered=%v", i, d.Msg, d.Redelivered)
		}
	}

	first := rec.got(id)
	p.Settle(id, "q", SettleAck, []uint64{first[0].Seq, first[1].Seq})
	p.Settle(id, "q", SettleRequeue, []uint64{first[2].Seq})
	p.Credit(id, 3)
	eventually(t, "3 more deliveries", 5*time.Second, func() bool { return len(rec.got(id)) == 8 })
	all := rec.got(id)
	if string(all[5].Msg) != "m2" || !all[5].Redelivered {
		t.Fatalf("requeued message came back as %q redelivered=%v, want m2 redelivered", all[5].Msg, all[5].Redelivered)
	}
	if string(all[6].Msg) != "m5" || string(all[7].Msg) != "m6" {
		t.Fatalf("after requeue got %q, %q; want m5, m6", all[6].Msg, all[7].Msg)
	}
	ready, unacked := fb.counts("q")
	if ready != 13 || unacked != 5 {
		t.Fatalf("owner has ready=%d unacked=%d, want 13 and 5", ready, unacked)
	}

	// Cancel: nothing more arrives, and the owner forgot the consumer.
	p.Cancel(id)
	p.Credit(id, 10)
	time.Sleep(100 * time.Millisecond)
	if n := len(rec.got(id)); n != 8 {
		t.Fatalf("%d deliveries after cancel, want 8", n)
	}
	if len(rec.cancels()) != 0 {
		t.Fatalf("ConsumerCancelled after a client cancel: %v", rec.cancels())
	}
}

func TestConsumeMissingQueueCarriesRemoteCode(t *testing.T) {
	fb := newFakeBroker("q")
	_, p := pair(t, fb, newRecorder())
	err := p.Consume(context.Background(), 1, "nope", 1, false, false)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != 404 {
		t.Fatalf("consume of a missing queue: %v, want RemoteError 404", err)
	}
	// The ID is free again after the failure.
	if err := p.Consume(context.Background(), 1, "q", 1, false, false); err != nil {
		t.Fatalf("consume after failure: %v", err)
	}
}

func TestGet(t *testing.T) {
	fb := newFakeBroker("q")
	_, p := pair(t, fb, newRecorder())
	ctx := context.Background()
	if _, ok, err := p.Get(ctx, "q", false); ok || err != nil {
		t.Fatalf("get from empty queue: ok=%v err=%v", ok, err)
	}
	publishN(t, p, "q", 2)
	d, ok, err := p.Get(ctx, "q", false)
	if !ok || err != nil || string(d.Msg) != "m0" || d.Remaining != 1 {
		t.Fatalf("get = %+v ok=%v err=%v", d, ok, err)
	}
	p.Settle(GetConsumerID, "q", SettleAck, []uint64{d.Seq})
	eventually(t, "ack of the got message", 5*time.Second, func() bool {
		_, unacked := fb.counts("q")
		return unacked == 0
	})
	if _, _, err := p.Get(ctx, "missing", true); err == nil {
		t.Fatal("get from a missing queue succeeded")
	}
}

func TestPurge(t *testing.T) {
	fb := newFakeBroker("q")
	_, p := pair(t, fb, newRecorder())
	ctx := context.Background()
	publishN(t, p, "q", 3)
	if n, err := p.Purge(ctx, "q"); n != 3 || err != nil {
		t.Fatalf("purge = %d, %v; want 3", n, err)
	}
	if ready, _ := fb.counts("q"); ready != 0 {
		t.Fatalf("%d ready after the purge", ready)
	}
	if n, err := p.Purge(ctx, "q"); n != 0 || err != nil {
		t.Fatalf("second purge = %d, %v; want 0", n, err)
	}
	var re *RemoteError
	if _, err := p.Purge(ctx, "missing"); !errors.As(err, &re) || re.Code != 404 {
		t.Fatalf("purge of a missing queue: %v, want a 404 remote error", err)
	}
}

func TestOwnerCancelReachesClient(t *testing.T) {
	fb := newFakeBroker("q")
	rec := newRecorder()
	_, p := pair(t, fb, rec)
	if err := p.Consume(context.Background(), 3, "q", 10, false, false); err != nil {
		t.Fatal(err)
	}
	fb.deleteQueue("q")
	eventually(t, "ConsumerCancelled", 5*time.Second, func() bool { return slices.Equal(rec.cancels(), []uint64{3}) })
	// The ID can be used again.
	fb.mu.Lock()
	fb.queues["q"] = &fakeQueue{unacked: map[uint64]fakeUnacked{}}
	fb.mu.Unlock()
	if err := p.Consume(context.Background(), 3, "q", 10, false, false); err != nil {
		t.Fatal(err)
	}
}

// Killing the owner with publishes awaiting replies: every one fails, none succeeds, and the
// remote consumer is reported cancelled.
func TestServerCloseFailsOutstandingAndCancelsConsumers(t *testing.T) {
	fb := newFakeBroker("q")
	fb.holdReplies = true
	rec := newRecorder()
	srv, p := pair(t, fb, rec)
	if err := p.Consume(context.Background(), 9, "q", 10, false, false); err != nil {
		t.Fatal(err)
	}
	const n = 100
	var succeeded, failed atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		p.PublishAsync([]string{"q"}, []byte(strconv.Itoa(i)), true, func(rejected bool, err error) {
			defer wg.Done()
			if err == nil {
				succeeded.Add(1)
			} else if errors.Is(err, ErrLinkDown) {
				failed.Add(1)
			} else {
				t.Errorf("publish %d failed with %v, want ErrLinkDown", i, err)
			}
		})
	}
	syncDone := make(chan error, 1)
	go func() {
		_, err := p.Publish(context.Background(), []string{"q"}, []byte("sync"), true)
		syncDone <- err
	}()
	eventually(t, "owner received every publish", 5*time.Second, func() bool {
		_, _, pub := fb.snapshot()
		return len(pub) == n+1
	})
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if succeeded.Load() != 0 || failed.Load() != n {
		t.Fatalf("after owner close: %d succeeded, %d failed; want 0 and %d", succeeded.Load(), failed.Load(), n)
	}
	if err := <-syncDone; !errors.Is(err, ErrLinkDown) {
		t.Fatalf("sync publish: %v, want ErrLinkDown", err)
	}
	eventually(t, "consumer cancelled", 5*time.Second, func() bool { return slices.Equal(rec.cancels(), []uint64{9}) })
	if _, downs, _ := fb.snapshot(); !slices.Equal(downs, []string{"client"}) {
		t.Fatalf("PeerDown calls: %v", downs)
	}
	// Replies given after the link died go nowhere and do not panic.
	fb.mu.Lock()
	for _, r := range fb.held {
		r(false, nil)
	}
	fb.mu.Unlock()
	// The link stays down; a new request fails fast rather than hanging.
	start := time.Now()
	if _, err := p.Publish(context.Background(), []string{"q"}, []byte("late"), false); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("publish with the owner gone: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("publish to a down peer took %v", time.Since(start))
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	fb := newFakeBroker("q")
	rec := newRecorder()
	srv, p := pair(t, fb, rec)
	addr := srv.Addr()
	if err := p.Consume(context.Background(), 1, "q", 10, false, false); err != nil {
		t.Fatal(err)
	}
	publishN(t, p, "q", 1)
	eventually(t, "delivery", 5*time.Second, func() bool { return len(rec.got(1)) == 1 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "link down", 5*time.Second, func() bool { return !p.Up() })
	eventually(t, "consumer cancelled", 5*time.Second, func() bool { return len(rec.cancels()) == 1 })

	fb2 := newFakeBroker("q")
	var srv2 *Server
	eventually(t, "listen again on "+addr, 5*time.Second, func() bool {
		var err error
		srv2, err = Listen(addr, testConfig("owner"), fb2)
		return err == nil
	})
	defer srv2.Close()
	eventually(t, "reconnect", 5*time.Second, p.Up)
	publishN(t, p, "q", 3)
	if err := p.Consume(context.Background(), 2, "q", 10, false, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deliveries on the new link", 5*time.Second, func() bool { return len(rec.got(2)) == 3 })
}

func TestClientCloseIsPeerDown(t *testing.T) {
	fb := newFakeBroker("q")
	rec := newRecorder()
	_, p := pair(t, fb, rec)
	if err := p.Consume(context.Background(), 1, "q", 2, false, false); err != nil {
		t.Fatal(err)
	}
	publishN(t, p, "q", 3)
	eventually(t, "2 deliveries", 5*time.Second, func() bool { return len(rec.got(1)) == 2 })
	_ = p.Close()
	eventually(t, "PeerDown", 5*time.Second, func() bool {
		_, downs, _ := fb.snapshot()
		return len(downs) == 1
	})
	if ready, unacked := fb.counts("q"); ready != 3 || unacked != 0 {
		t.Fatalf("after PeerDown ready=%d unacked=%d, want the 2 unacked requeued (3, 0)", ready, unacked)
	}
	if _, err := p.Publish(context.Background(), []string{"q"}, nil, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
}

func TestWrongSecretRefused(t *testing.T) {
	fb := newFakeBroker("q")
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), fb)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	bad := testConfig("intruder")
	bad.Secret = "wrong"
	bad.ConnectWait = 300 * time.Millisecond
	p := Dial(srv.Addr(), bad, newRecorder())
	_, err = p.Publish(context.Background(), []string{"q"}, []byte("x"), false)
	if !errors.Is(err, ErrLinkDown) {
		t.Fatalf("publish with a wrong secret: %v, want ErrLinkDown", err)
	}
	if p.Up() {
		t.Fatal("link with a wrong secret is up")
	}
	_ = p.Close()

	// A raw connection that skips the handshake and sends a request frame.
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	raw := appendFrame(nil, &frame{typ: framePublish, queues: []string{"q"}, msg: []byte("sneaky")})
	_, _ = conn.Write(raw)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatal("server answered an unauthenticated request")
	}
	_ = conn.Close()

	if calls, _, _ := fb.snapshot(); calls != 0 {
		t.Fatalf("handler was called %d times by unauthenticated peers", calls)
	}
}

// A server that does not know the secret cannot impersonate the owner either.
func TestClientRefusesServerWithWrongSecret(t *testing.T) {
	fb := newFakeBroker("q")
	cfg := testConfig("impostor")
	cfg.Secret = "other"
	srv, err := Listen("127.0.0.1:0", cfg, fb)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	good := testConfig("client")
	good.ConnectWait = 300 * time.Millisecond
	p := Dial(srv.Addr(), good, newRecorder())
	defer p.Close()
	if _, err := p.Publish(context.Background(), []string{"q"}, []byte("x"), false); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("publish to an impostor: %v", err)
	}
	if calls, _, _ := fb.snapshot(); calls != 0 {
		t.Fatalf("impostor handler saw %d calls", calls)
	}
}

// The owner stops reading (its handler is stuck): publishers must block once MaxBuffered
// bytes are queued, not grow the buffer without bound.
func TestBackPressureBlocksPublishers(t *testing.T) {
	fb := newFakeBroker("q")
	gate := make(chan struct{})
	fb.publishGate = gate
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), fb)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := testConfig("client")
	cfg.MaxBuffered = 256 << 10
	p := Dial(srv.Addr(), cfg, newRecorder())
	defer p.Close()
	eventually(t, "link up", 5*time.Second, p.Up)

	msg := make([]byte, 64<<10)
	const total = 2000 // 125 MiB: far more than socket buffers plus MaxBuffered
	var sent, acked atomic.Int64
	var maxSeen atomic.Int64
	publisherDone := make(chan struct{})
	go func() {
		defer close(publisherDone)
		for range total {
			p.PublishAsync([]string{"q"}, msg, false, func(bool, error) { acked.Add(1) })
			sent.Add(1)
			if cl := p.cur.Load(); cl != nil {
				if b := int64(cl.l.buffered()); b > maxSeen.Load() {
					maxSeen.Store(b)
				}
			}
		}
	}()
	// Wait until the publisher stops making progress.
	var last int64 = -1
	eventually(t, "publisher blocked", 10*time.Second, func() bool {
		time.Sleep(100 * time.Millisecond)
		cur := sent.Load()
		stalled := cur == last
		last = cur
		return stalled
	})
	if s := sent.Load(); s >= total {
		t.Fatalf("all %d publishes went through against an owner that reads nothing", s)
	}
	limit := int64(cfg.MaxBuffered + len(msg) + frameOverhead + 16)
	if m := maxSeen.Load(); m > limit {
		t.Fatalf("outbound buffer reached %d bytes, limit %d", m, limit)
	}
	// A context-bound publish gives up instead of waiting forever.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = p.Publish(ctx, []string{"q"}, msg, false)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish under back-pressure: %v, want deadline exceeded", err)
	}
	close(gate)
	<-publisherDone
	eventually(t, "every publish answered", 20*time.Second, func() bool { return acked.Load() == total })
}

// The consumer's node stops reading: Deliver must refuse once the link buffer is full so the
// owner keeps its messages.
func TestDeliverRefusesWhenLinkFull(t *testing.T) {
	fb := newFakeBroker("q")
	rec := newRecorder()
	rec.block = make(chan struct{})
	srvCfg := testConfig("owner")
	srvCfg.MaxBuffered = 128 << 10
	srv, err := Listen("127.0.0.1:0", srvCfg, fb)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p := Dial(srv.Addr(), testConfig("client"), rec)
	defer p.Close()
	if err := p.Consume(context.Background(), 1, "q", 0, true, false); err != nil {
		t.Fatal(err)
	}
	var out Deliverer
	eventually(t, "consumer registered", 5*time.Second, func() bool {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		if c := fb.consumers[consumerKey{"client", 1}]; c != nil {
			out = c.out
		}
		return out != nil
	})
	msg := make([]byte, 32<<10)
	// A refusal can be momentary (the writer has not caught up yet); the link is full once
	// Deliver still refuses after the writer had time to push into the socket.
	accepted := 0
	for accepted < 10000 {
		if out.Deliver(Delivery{Seq: uint64(accepted), Msg: msg}) {
			accepted++
			continue
		}
		time.Sleep(50 * time.Millisecond)
		if !out.Deliver(Delivery{Seq: uint64(accepted), Msg: msg}) {
			break
		}
		accepted++
	}
	if accepted >= 10000 {
		t.Fatal("Deliver never refused although the consumer node reads nothing")
	}
	srv.mu.Lock()
	sl := srv.links["client"]
	srv.mu.Unlock()
	if b, limit := sl.l.buffered(), srvCfg.MaxBuffered+len(msg)+frameOverhead; b > limit {
		t.Fatalf("owner buffered %d bytes for the link, limit %d", b, limit)
	}
	t.Logf("link held %d deliveries (%d KiB) before refusing", accepted, accepted*len(msg)>>10)
	close(rec.block)
	eventually(t, "accepted deliveries arrive", 10*time.Second, func() bool { return len(rec.got(1)) == accepted })
	if !out.Deliver(Delivery{Seq: 1 << 40, Msg: []byte("after")}) {
		t.Fatal("Deliver still refuses after the buffer drained")
	}
}

// A peer that completes the handshake and then goes silent (a partition) is detected by the
// heartbeat timeout, and outstanding publishes fail.
// startSilentPeer accepts one link, completes the handshake and then neither reads nor writes,
// as a frozen process would; it stops at the test's end.
func startSilentPeer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silentCfg := testConfig("silent").withDefaults()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		fr, dr := readerFor(conn, time.Second)
		if _, err := serverHandshake(beginHandshake(conn, fr, dr, time.Second), silentCfg); err != nil {
			t.Errorf("silent server handshake: %v", err)
			return
		}
		_, _ = conn.Write(appendFrame(nil, &frame{typ: frameWelcome}))
		<-stop // never read, never write
	}()
	t.Cleanup(func() {
		close(stop)
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestSilentPeerDetected(t *testing.T) {
	addr := startSilentPeer(t)
	cfg := testConfig("client")
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.PeerTimeout = 300 * time.Millisecond
	p := Dial(addr, cfg, newRecorder())
	defer p.Close()
	eventually(t, "link up", 5*time.Second, p.Up)
	start := time.Now()
	_, err := p.Publish(context.Background(), []string{"q"}, []byte("x"), false)
	if !errors.Is(err, ErrLinkDown) {
		t.Fatalf("publish to a silent peer: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent peer detected after %v", d)
	}
}

// TestBreakFailsRequestsToAFrozenPeerAtOnce: with a one-minute PeerTimeout, a publish in flight
// to a peer that stopped answering fails as soon as the link is broken on purpose (the cluster
// declared the peer dead), and a publish made afterwards fails at once too.
func TestBreakFailsRequestsToAFrozenPeerAtOnce(t *testing.T) {
	addr := startSilentPeer(t)
	cfg := testConfig("client")
	cfg.PeerTimeout = time.Minute
	p := Dial(addr, cfg, newRecorder())
	defer p.Close()
	eventually(t, "link up", 5*time.Second, p.Up)
	inFlight := make(chan error, 1)
	p.PublishAsync([]string{"q"}, []byte("x"), false, func(_ bool, err error) { inFlight <- err })
	time.Sleep(100 * time.Millisecond) // on the wire, unanswered
	p.Break(errors.New("declared dead"))
	select {
	case err := <-inFlight:
		if !errors.Is(err, ErrLinkDown) {
			t.Fatalf("publish in flight when the link was broken: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publish in flight still waiting 10 s after Break")
	}
	_, err := p.Publish(context.Background(), []string{"q"}, []byte("y"), false)
	if !errors.Is(err, ErrLinkDown) {
		t.Fatalf("publish after Break: %v", err)
	}
}

// Deliveries in flight when the client cancels go back to the owner instead of to the
// cancelled consumer. The owner is held until the cancel was sent, so every delivery is in
// flight at that moment.
func TestCancelRequeuesInFlightDeliveries(t *testing.T) {
	fb := newFakeBroker("q")
	gate := make(chan struct{})
	fb.publishGate = gate
	rec := newRecorder()
	_, p := pair(t, fb, rec)
	if err := p.Consume(context.Background(), 4, "q", 0, false, false); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var answered atomic.Int32
	for i := range n {
		p.PublishAsync([]string{"q"}, []byte(strconv.Itoa(i)), false, func(bool, error) { answered.Add(1) })
	}
	p.Cancel(4)
	close(gate)
	eventually(t, "publishes answered", 5*time.Second, func() bool { return answered.Load() == n })
	eventually(t, "every in-flight delivery requeued", 5*time.Second, func() bool {
		ready, unacked := fb.counts("q")
		return ready == n && unacked == 0
	})
	if got := len(rec.got(4)); got != 0 {
		t.Fatalf("%d deliveries reached a consumer cancelled before they arrived", got)
	}
	eventually(t, "cancel-ok forgets the consumer", 5*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.consumers) == 0
	})
}

func TestConcurrentPublishersAndConsumers(t *testing.T) {
	fb := newFakeBroker("a", "b")
	rec := newRecorder()
	_, p := pair(t, fb, rec)
	for id, q := range map[uint64]string{1: "a", 2: "b"} {
		if err := p.Consume(context.Background(), id, q, 0, true, false); err != nil {
			t.Fatal(err)
		}
	}
	const perPublisher = 500
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := []string{"a", "b"}[w%2]
			for i := range perPublisher {
				if _, err := p.Publish(context.Background(), []string{q}, []byte(fmt.Sprintf("%d-%d", w, i)), false); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	eventually(t, "all deliveries", 10*time.Second, func() bool {
		return len(rec.got(1)) == 2*perPublisher && len(rec.got(2)) == 2*perPublisher
	})
	// Per publisher, deliveries keep publish order.
	for id := uint64(1); id <= 2; id++ {
		next := map[string]int{}
		for _, d := range rec.got(id) {
			var w, i int
			if _, err := fmt.Sscanf(string(d.Msg), "%d-%d", &w, &i); err != nil {
				t.Fatal(err)
			}
			key := strconv.Itoa(w)
			if i != next[key] {
				t.Fatalf("consumer %d: publisher %d message %d arrived when %d was due", id, w, i, next[key])
			}
			next[key]++
		}
	}
}

// A node reconnects while the owner still holds its old, half-open link: the old link is
// dropped and its PeerDown runs before the new link's requests, so the new consumer survives.
func TestNewLinkFromSameNodeReplacesOldOne(t *testing.T) {
	fb := newFakeBroker("q")
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), fb)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	// The old link: authenticated, registers consumer 1, then goes quiet without closing.
	old, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	cfg := testConfig("client").withDefaults()
	fr, dr := readerFor(old, 2*time.Second)
	if _, err := clientHandshake(beginHandshake(old, fr, dr, 2*time.Second), cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Write(appendFrame(nil, &frame{typ: frameConsume, reqID: 1, consumerID: 1, queue: "q"})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "old consumer registered", 5*time.Second, func() bool {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		return fb.consumers[consumerKey{"client", 1}] != nil
	})

	p := Dial(srv.Addr(), testConfig("client"), newRecorder())
	defer p.Close()
	if err := p.Consume(context.Background(), 2, "q", 1, false, false); err != nil {
		t.Fatal(err)
	}
	_, downs, _ := fb.snapshot()
	fb.mu.Lock()
	_, oldAlive := fb.consumers[consumerKey{"client", 1}]
	_, newAlive := fb.consumers[consumerKey{"client", 2}]
	fb.mu.Unlock()
	if !slices.Equal(downs, []string{"client"}) || oldAlive || !newAlive {
		t.Fatalf("PeerDown calls %v, old consumer alive %v, new consumer alive %v", downs, oldAlive, newAlive)
	}
	// The old connection was closed by the owner.
	_ = old.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := old.Read(make([]byte, 4096)); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("old link still open")
			}
			break
		}
	}
}
