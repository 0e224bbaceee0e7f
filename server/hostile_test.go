package server_test

// The hostile-client suite: each test runs one attack against an in-process node on loopback
// and asserts, while it runs, that a normal client still publishes and consumes 100 messages
// (within a generous liveness bound, not a performance target) and that the process's live heap
// and RSS stay within a stated bound. Figures are logged (go test -v -run TestHostile) and
// recorded in docs/limits.md.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/wire"
)

// livenessBound is how long the normal client may take for its 100 messages while an attack
// runs: far above the milliseconds it needs, far below the stalls the attacks used to cause.
const livenessBound = 10 * time.Second

// normalClient publishes 100 confirmed messages to its own queue and consumes them, failing the
// test if that takes longer than livenessBound. It returns the time taken.
func normalClient(t *testing.T, n *testNode) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- roundTrip100(n.url) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("normal client: %v", err)
		}
	case <-time.After(livenessBound):
		t.Fatalf("normal client did not publish and consume 100 messages within %s", livenessBound)
	}
	return time.Since(start)
}

func roundTrip100(url string) error {
	c, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("declare: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), livenessBound)
	defer cancel()
	for i := range 100 {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q.Name, false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		if err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			return fmt.Errorf("confirm %d: %v %v", i, ok, err)
		}
	}
	for i := range 100 {
		select {
		case d := <-deliveries:
			if string(d.Body) != strconv.Itoa(i) {
				return fmt.Errorf("delivery %d: %q", i, d.Body)
			}
		case <-ctx.Done():
			return fmt.Errorf("delivery %d missing", i)
		}
	}
	return nil
}

type memSample struct{ heap, rss uint64 }

// sampleMem returns the live heap after a collection and the process's resident set.
func sampleMem() memSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, rss: rssBytes()}
}

func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func rssSlack(heapLimit uint64) uint64 { return 4*heapLimit + 64<<20 }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// checkMem fails if the live heap grew more than limit over base, or RSS more than
// rssSlack(limit) (the race detector's shadow memory counts in RSS).
func checkMem(t *testing.T, what string, base memSample, limit uint64) memSample {
	t.Helper()
	now := sampleMem()
	dh, dr := int64(now.heap)-int64(base.heap), int64(now.rss)-int64(base.rss)
	t.Logf("%s: heap %+.1f MiB (%.1f MiB), RSS %+.1f MiB (%.1f MiB)", what,
		float64(dh)/(1<<20), mib(now.heap), float64(dr)/(1<<20), mib(now.rss))
	if dh > int64(limit) || dr > int64(rssSlack(limit)) {
		t.Fatalf("%s: memory grew by heap %.1f MiB / RSS %.1f MiB, bounds %.0f / %.0f MiB", what,
			float64(dh)/(1<<20), float64(dr)/(1<<20), mib(limit), mib(rssSlack(limit)))
	}
	return now
}

// attacker is a raw AMQP connection that sends what it likes.
type attacker struct {
	*rawConn
}

func dialAttacker(t *testing.T, n *testNode, from string) *attacker {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	nc, err := d.Dial("tcp", n.AMQPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &attacker{&rawConn{t: t, nc: nc, fr: wire.NewFrameReader(nc, wire.DefaultFrameMax)}}
}

// login runs the handshake with channel_max 2047 and opens channels 1..channels.
func (a *attacker) login(channels int) {
	a.t.Helper()
	a.send(wire.ProtocolHeader)
	if _, ok := a.next().(*wire.ConnectionStart); !ok {
		a.t.Fatal("no connection.start")
	}
	a.sendMethod(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	if _, ok := a.next().(*wire.ConnectionTune); !ok {
		a.t.Fatal("no connection.tune")
	}
	a.sendMethod(0, &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: wire.DefaultFrameMax})
	a.sendMethod(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if _, ok := a.next().(*wire.ConnectionOpenOk); !ok {
		a.t.Fatal("no connection.open-ok")
	}
	var b []byte
	for i := 1; i <= channels; i++ {
		b = wire.AppendMethodFrame(b, uint16(i), &wire.ChannelOpen{})
	}
	a.send(b)
	for range channels {
		if _, ok := a.next().(*wire.ChannelOpenOk); !ok {
			a.t.Fatal("no channel.open-ok")
		}
	}
}

// nextOn reads frames until a method arrives and returns it with its channel.
func (a *attacker) nextOn() (uint16, wire.Method) {
	a.t.Helper()
	for {
		f, err := a.fr.ReadFrame()
		if err != nil {
			a.t.Fatalf("read frame: %v", err)
		}
		if f.Type != wire.FrameMethod {
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			a.t.Fatalf("decode: %v", err)
		}
		return f.Channel, m
	}
}

// expectChannelCloses reads until want channels were closed with code and text containing
// substr, answering close-ok; it returns the channels.
func (a *attacker) expectChannelCloses(want int, code uint16, substr string) map[uint16]bool {
	a.t.Helper()
	closed := map[uint16]bool{}
	for len(closed) < want {
		id, m := a.nextOn()
		cc, ok := m.(*wire.ChannelClose)
		if !ok {
			continue
		}
		if cc.ReplyCode != code || !strings.Contains(cc.ReplyText, substr) {
			a.t.Fatalf("channel %d closed with %d %q, want %d containing %q", id, cc.ReplyCode, cc.ReplyText, code, substr)
		}
		closed[id] = true
		a.sendMethod(id, &wire.ChannelCloseOk{})
	}
	return closed
}

// announce starts a publish of size bytes on channel id and sends its first body byte.
func announce(b []byte, id uint16, size uint64) []byte {
	b = wire.AppendMethodFrame(b, id, &wire.BasicPublish{RoutingKey: "nowhere"})
	b = wire.AppendHeaderFrame(b, id, wire.ClassBasic, size, []byte{0, 0})
	return wire.AppendBodyFrames(b, id, []byte{'x'}, wire.DefaultFrameMax)
}

// TestHostileAnnouncedBodies: 200 channels each announce a 128 MiB body (25 GiB in all) and
// trickle single bytes. Memory follows the bytes that arrived, a normal client is served, the
// stalled bodies time out with 406 and the memory is back once the attacker leaves.
func TestHostileAnnouncedBodies(t *testing.T) {
	const channels = 200
	n := startNode(t, func(c *node.Config) {
		c.Server.MaxAnnouncedBodyBytes = 1 << 40 // let every announcement through: memory must still follow bytes
		c.Server.BodyTimeout = time.Second
	})
	normalClient(t, n)
	base := sampleMem()
	a := dialAttacker(t, n, "")
	a.login(channels)
	var b []byte
	for i := 1; i <= channels; i++ {
		b = announce(b, uint16(i), 128<<20)
	}
	a.send(b)
	for range 3 { // trickle: one more byte per channel, within the body timeout
		time.Sleep(300 * time.Millisecond)
		b = b[:0]
		for i := 1; i <= channels; i++ {
			b = wire.AppendBodyFrames(b, uint16(i), []byte{'y'}, wire.DefaultFrameMax)
		}
		a.send(b)
	}
	took := normalClient(t, n)
	t.Logf("normal client during the attack: %v", took)
	checkMem(t, fmt.Sprintf("%d channels announcing 128 MiB each", channels), base, 32<<20)
	// The attacker stops sending: every body stalls and its channel is closed.
	start := time.Now()
	closed := a.expectChannelCloses(channels, wire.PreconditionFailed, "message body not received within 1s: 4 of 134217728 bytes arrived")
	t.Logf("%d stalled bodies timed out %v after the last byte", len(closed), time.Since(start))
	normalClient(t, n)
	a.sendMethod(0, &wire.ConnectionClose{ReplyCode: 200})
	_ = a.nc.Close()
	waitFor(t, func() bool { return n.AMQP.ConnectionCount() == 0 }, "attacker's connection gone")
	checkMem(t, "after the attacker left", base, 8<<20)
}

// TestHostileAnnouncedBytesLimit: a connection may have at most MaxAnnouncedBodyBytes announced
// but not yet received (default 256 MiB; 8 MiB here, with 4 MiB messages, to keep the test
// light): the third 4 MiB announcement closes its channel with 406, and the accepted bodies
// still complete.
func TestHostileAnnouncedBytesLimit(t *testing.T) {
	const msgSize = 4 << 20
	n := startNode(t, func(c *node.Config) {
		c.Server.MaxMessageSize = msgSize
		c.Server.MaxAnnouncedBodyBytes = 2 * msgSize
	})
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("big", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	a := dialAttacker(t, n, "")
	a.login(80)
	var b []byte
	for i := 1; i <= 80; i++ {
		b = wire.AppendMethodFrame(b, uint16(i), &wire.BasicPublish{RoutingKey: "big"})
		b = wire.AppendHeaderFrame(b, uint16(i), wire.ClassBasic, msgSize, []byte{0, 0})
		b = wire.AppendBodyFrames(b, uint16(i), []byte{'x'}, wire.DefaultFrameMax)
	}
	a.send(b)
	closed := a.expectChannelCloses(78, wire.PreconditionFailed, "announced but unreceived body bytes over 8388608")
	if closed[1] || closed[2] {
		t.Fatalf("the first two announcements fit the allowance, closed: %v", closed)
	}
	normalClient(t, n)
	rest := make([]byte, msgSize-1)
	b = wire.AppendBodyFrames(nil, 1, rest, wire.DefaultFrameMax)
	a.send(wire.AppendBodyFrames(b, 2, rest, wire.DefaultFrameMax))
	for range 2 {
		m := getOne(t, ch, "big", true)
		if len(m.Body) != msgSize {
			t.Fatalf("message of %d bytes, want %d", len(m.Body), msgSize)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(livenessBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHostileExchangeChain: a chain of exchange-to-exchange bindings deeper than the routing
// limit. Publishes into it are refused with 406 at once (they used to walk the whole chain under
// the topology lock) while a normal client and topology changes carry on.
func TestHostileExchangeChain(t *testing.T) {
	const depth = fsm.MaxRouteDepth + 16
	n := startNode(t)
	ch := channel(t, dial(t, n))
	for i := range depth {
		if err := ch.ExchangeDeclare("chain"+strconv.Itoa(i), "fanout", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if err := ch.ExchangeBind("chain"+strconv.Itoa(i), "", "chain"+strconv.Itoa(i-1), false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Close the loop too: a cycle must end as well.
	if err := ch.ExchangeBind("chain0", "", "chain"+strconv.Itoa(depth-1), false, nil); err != nil {
		t.Fatal(err)
	}
	base := sampleMem()
	stop := make(chan struct{})
	var refused atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the attacker publishes into the chain as fast as it can
		defer wg.Done()
		c, err := amqp.Dial(n.url)
		if err != nil {
			t.Errorf("attacker dial: %v", err)
			return
		}
		defer c.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			pch, err := c.Channel()
			if err != nil {
				t.Errorf("attacker channel: %v", err)
				return
			}
			closed := pch.NotifyClose(make(chan *amqp.Error, 1))
			_ = pch.PublishWithContext(context.Background(), "chain0", "", false, false, amqp.Publishing{Body: []byte("x")})
			select {
			case e := <-closed:
				if e == nil || e.Code != 406 || !strings.Contains(e.Reason, "deeper than 64") {
					t.Errorf("publish into the chain: %v, want 406 deeper than 64", e)
					return
				}
				refused.Add(1)
			case <-time.After(livenessBound):
				t.Errorf("publish into the chain was not refused")
				return
			}
		}
	}()
	took := normalClient(t, n)
	// Topology changes still commit while the attack runs.
	if err := ch.ExchangeDeclare("during-attack", "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	t.Logf("normal client during the attack: %v; %d publishes into the chain refused", took, refused.Load())
	if refused.Load() == 0 {
		t.Fatal("the attacker's publishes were never refused")
	}
	checkMem(t, "exchange chain attack", base, 32<<20)
}

// TestHostileManyConsumers: one channel registers 100k consumers on a queue, then its
// connection drops; the queue (shared with a normal client) keeps serving.
func TestHostileManyConsumers(t *testing.T) {
	const consumers = 100_000
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("shared", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	base := sampleMem()
	a := dialAttacker(t, n, "")
	a.login(1)
	var b []byte
	for i := range consumers {
		b = wire.AppendMethodFrame(b, 1, &wire.BasicConsume{Queue: "shared", ConsumerTag: "c" + strconv.Itoa(i), NoWait: true})
	}
	a.send(b)
	a.sendMethod(1, &wire.BasicQos{PrefetchCount: 1}) // answered after every consume before it
	if _, ok := a.next().(*wire.BasicQosOk); !ok {
		t.Fatal("no basic.qos-ok")
	}
	waitFor(t, func() bool { _, _, c := queueCounts(t, ch, "shared"); return c == consumers }, "consumers registered")
	checkMem(t, fmt.Sprintf("%d consumers on one channel", consumers), base, 64<<20)
	start := time.Now()
	_ = a.nc.Close()
	waitFor(t, func() bool { _, _, c := queueCounts(t, ch, "shared"); return c == 0 }, "consumers removed")
	t.Logf("%d consumers removed %v after the connection dropped", consumers, time.Since(start))
	// The shared queue serves a normal consumer.
	d, err := ch.Consume("shared", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		publish(t, ch, "", "shared", body(strconv.Itoa(i)))
	}
	for range 100 {
		recv(t, d)
	}
	normalClient(t, n)
}

func queueCounts(t *testing.T, ch *amqp.Channel, name string) (ready, unacked, consumers int) {
	t.Helper()
	q, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages, 0, q.Consumers
}

// TestConsumerMaxPerChannel: the limit closes the connection with 530, as RabbitMQ's
// consumer_max_per_channel does.
func TestConsumerMaxPerChannel(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Server.ConsumerMaxPerChannel = 3 })
	c := dial(t, n)
	ch := channel(t, c)
	if _, err := ch.QueueDeclare("q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := ch.Consume("q", "c"+strconv.Itoa(i), false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Cancel("c0", false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume("q", "c3", false, false, false, false, nil); err != nil {
		t.Fatalf("consume after a cancel freed a place: %v", err)
	}
	_, err := ch.Consume("q", "c4", false, false, false, false, nil)
	wantCode(t, err, 530)
	if !strings.Contains(err.Error(), "reached maximum (3) of consumers per channel") {
		t.Fatalf("error text: %v", err)
	}
}

// TestChannelMaxNegotiated: a client asking for fewer channels gets that cap.
func TestChannelMaxNegotiated(t *testing.T) {
	n := startNode(t)
	c, err := amqp.DialConfig(n.url, amqp.Config{ChannelMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := rawDial(t, n)
	r.open() // asks for channel_max 10
	r.sendMethod(11, &wire.ChannelOpen{})
	r.expectConnClose(wire.NotAllowed)
}

// TestHostileLoginGuessing: 8 connections at a time guess passwords from 127.0.0.2 for 2.5 s.
// The address gets about the burst plus one guess a second; a good login from another address
// meanwhile is not delayed by the throttle.
func TestHostileLoginGuessing(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Server.FailedLoginMaxDelay = 2 * time.Second })
	const attackFor = 2 * time.Second
	var checked, refused atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	attackStart := time.Now()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				text, err := guess(n.AMQPAddr(), "127.0.0.2", "guest", fmt.Sprintf("wrong-%d-%d", w, i))
				switch {
				case err != nil:
					t.Errorf("guess: %v", err)
					return
				case strings.Contains(text, "For details see the broker logfile"):
					checked.Add(1)
				case strings.Contains(text, "Too many failed logins from 127.0.0.2"):
					refused.Add(1)
				default:
					t.Errorf("unexpected refusal %q", text)
					return
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the burst is spent
	loginStart := time.Now()
	c, err := amqp.Dial(n.url)
	if err != nil {
		t.Fatalf("good login during the attack: %v", err)
	}
	login := time.Since(loginStart)
	_ = c.Close()
	took := normalClient(t, n)
	time.Sleep(attackFor - time.Since(loginStart))
	close(stop)
	wg.Wait()
	elapsed := time.Since(attackStart)
	t.Logf("in %v: %d passwords checked, %d attempts refused unchecked; good login %v, normal client %v",
		elapsed.Round(time.Millisecond), checked.Load(), refused.Load(), login, took)
	// Burst 10, then 1 a second (the attack's whole length, including the attempts that were
	// still waiting when it stopped), plus one in flight per attacking connection.
	if max := int64(10 + int(elapsed.Seconds()+1) + 8); checked.Load() > max {
		t.Fatalf("%d passwords checked from one address, want at most %d", checked.Load(), max)
	}
	if login > time.Second {
		t.Fatalf("a good login from a clean address took %v while another address was throttled", login)
	}
}

// guess tries one password from the local address from and returns connection.close's text.
func guess(addr, from, user, pass string) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(livenessBound))
	fr := wire.NewFrameReader(nc, wire.DefaultFrameMax)
	next := func() (wire.Method, error) {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return nil, err
			}
			if f.Type == wire.FrameMethod {
				return wire.DecodeMethod(f.Payload)
			}
		}
	}
	if _, err := nc.Write(wire.ProtocolHeader); err != nil {
		return "", err
	}
	if _, err := next(); err != nil {
		return "", err
	}
	if _, err := nc.Write(wire.AppendMethodFrame(nil, 0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00" + user + "\x00" + pass, Locale: "en_US"})); err != nil {
		return "", err
	}
	m, err := next()
	if err != nil {
		return "", err
	}
	cc, ok := m.(*wire.ConnectionClose)
	if !ok || cc.ReplyCode != wire.AccessRefused {
		return "", fmt.Errorf("answer to a wrong password: %#v", m)
	}
	return cc.ReplyText, nil
}

// TestHostileSlowloris: 200 connections send the protocol header a byte at a time and never
// finish the handshake; the handshake timeout drops them all while a normal client is served.
func TestHostileSlowloris(t *testing.T) {
	const conns = 200
	n := startNode(t, func(c *node.Config) { c.Server.HandshakeTimeout = time.Second })
	base := sampleMem()
	ncs := make([]net.Conn, conns)
	for i := range ncs {
		nc, err := net.Dial("tcp", n.AMQPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		ncs[i] = nc
		_, _ = nc.Write(wire.ProtocolHeader[:1])
	}
	took := normalClient(t, n)
	for _, nc := range ncs {
		_, _ = nc.Write(wire.ProtocolHeader[1:2])
	}
	checkMem(t, fmt.Sprintf("%d slowloris connections", conns), base, 32<<20)
	start := time.Now()
	for _, nc := range ncs {
		_ = nc.SetReadDeadline(time.Now().Add(livenessBound))
		buf := make([]byte, 16)
		for {
			if _, err := nc.Read(buf); err != nil {
				if isTimeoutErr(err) {
					t.Fatal("a half-open handshake was not dropped")
				}
				break
			}
		}
	}
	waitFor(t, func() bool { return n.AMQP.ConnectionCount() == 0 }, "slowloris connections dropped")
	t.Logf("normal client during the attack: %v; %d connections dropped %v later", took, conns, time.Since(start))
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// deepTable encodes a field table nested depth levels deep: {"a": {"a": ... {}}}.
func deepTable(depth int) []byte {
	inner := []byte{0, 0, 0, 0}
	for range depth {
		entry := append([]byte{1, 'a', 'F'}, inner...)
		t := binary.BigEndian.AppendUint32(nil, uint32(len(entry)))
		inner = append(t, entry...)
	}
	return inner
}

// TestHostileDeepTables: tables nested 10k deep in a method's arguments and in a message's
// headers are refused with an error, never followed down.
func TestHostileDeepTables(t *testing.T) {
	n := startNode(t)
	table := deepTable(10_000)
	// exchange.declare with the table as arguments: a malformed method closes the connection.
	a := dialAttacker(t, n, "")
	a.login(1)
	args := []byte{0, 0}                        // reserved-1
	args = append(args, 1, 'x', 6)              // exchange "x"
	args = append(args, []byte("direct")...)    // type
	args = append(args, 0)                      // flags
	args = append(args, table...)               // arguments
	m := binary.BigEndian.AppendUint16(nil, 40) // exchange
	m = binary.BigEndian.AppendUint16(m, 10)    // declare
	m = append(m, args...)
	a.send(rawFrame(wire.FrameMethod, 1, m))
	code := a.expectAnyConnClose()
	t.Logf("deep table in exchange.declare arguments: connection.close %d", code)
	// A publish whose headers property holds the table: refused on the channel or connection.
	b := dialAttacker(t, n, "")
	b.login(1)
	props := binary.BigEndian.AppendUint16(nil, 0x2000) // headers present
	props = append(props, table...)
	frames := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "nowhere"})
	frames = wire.AppendHeaderFrame(frames, 1, wire.ClassBasic, 1, props)
	frames = wire.AppendBodyFrames(frames, 1, []byte{'x'}, wire.DefaultFrameMax)
	b.send(frames)
	for {
		id, m := b.nextOn()
		if cc, ok := m.(*wire.ChannelClose); ok {
			t.Logf("deep table in message headers: channel %d closed %d %s", id, cc.ReplyCode, cc.ReplyText)
			break
		}
		if cc, ok := m.(*wire.ConnectionClose); ok {
			t.Logf("deep table in message headers: connection.close %d %s", cc.ReplyCode, cc.ReplyText)
			break
		}
	}
	normalClient(t, n)
}

func rawFrame(typ uint8, ch uint16, payload []byte) []byte {
	b := []byte{typ, byte(ch >> 8), byte(ch)}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, wire.FrameEnd)
}

// expectAnyConnClose waits for connection.close, answers close-ok and returns its code.
func (a *attacker) expectAnyConnClose() uint16 {
	a.t.Helper()
	for {
		_, m := a.nextOn()
		if cc, ok := m.(*wire.ConnectionClose); ok {
			a.sendMethod(0, &wire.ConnectionCloseOk{})
			return cc.ReplyCode
		}
	}
}

// TestHostileFrameAbuse: malformed frames each close their connection with the spec's code; a
// normal client is served throughout.
func TestHostileFrameAbuse(t *testing.T) {
	n := startNode(t)
	cases := []struct {
		name  string
		frame []byte
		code  uint16
	}{
		{"heartbeat with a payload", rawFrame(wire.FrameHeartbeat, 0, []byte("hello")), wire.FrameError},
		{"heartbeat on a channel", rawFrame(wire.FrameHeartbeat, 1, nil), wire.FrameError},
		{"unknown frame type", rawFrame(9, 0, []byte{1}), wire.FrameError},
		// Only the header of an oversized frame: the size alone is refused.
		{"oversized frame", rawFrame(wire.FrameBody, 1, make([]byte, wire.DefaultFrameMax))[:wire.HeaderSize], wire.FrameError},
		{"bad frame end", append(rawFrame(wire.FrameMethod, 1, []byte{0, 20, 0, 10, 0})[:12], 0x00), wire.FrameError},
		{"body without header", rawFrame(wire.FrameBody, 1, []byte("x")), wire.UnexpectedFrame},
		{"header without publish", wire.AppendHeaderFrame(nil, 1, wire.ClassBasic, 1, []byte{0, 0}), wire.UnexpectedFrame},
		{"content on channel 0", wire.AppendHeaderFrame(nil, 0, wire.ClassBasic, 1, []byte{0, 0}), wire.CommandInvalid},
		{"frame on an unopened channel", wire.AppendMethodFrame(nil, 7, &wire.BasicQos{}), wire.ChannelError},
		{"truncated method", rawFrame(wire.FrameMethod, 1, []byte{0, 60}), wire.SyntaxError},
	}
	for _, c := range cases {
		a := dialAttacker(t, n, "")
		a.login(1)
		a.send(c.frame)
		if got := a.expectAnyConnClose(); got != c.code {
			t.Errorf("%s: connection.close %d, want %d", c.name, got, c.code)
		}
	}
	// Heartbeats with a payload are refused during the handshake too.
	a := dialAttacker(t, n, "")
	a.send(wire.ProtocolHeader)
	a.next()
	a.send(rawFrame(wire.FrameHeartbeat, 0, []byte{1, 2, 3}))
	if got := a.expectAnyConnClose(); got != wire.FrameError {
		t.Errorf("heartbeat with payload in the handshake: %d, want 501", got)
	}
	normalClient(t, n)
}
