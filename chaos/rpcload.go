package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/rpc"
)

// rpcTopic is the oslo topic the chaos RPC servers serve.
const rpcTopic = "chaos"

// callTimeout bounds one RPC call; a call without a reply by then counts as a timeout.
const callTimeout = 5 * time.Second

// adder is the RPC endpoint: its answer is a pure function of the request, plus the name of
// the server that computed it, so a caller can tell a wrong sum, a reply meant for another
// call (nonce) and a call served by the wrong server.
type adder struct {
	server string
	served atomic.Int64
}

// AddArgs are add's keyword arguments.
type AddArgs struct {
	A     int64 `json:"a"`
	B     int64 `json:"b"`
	Nonce int64 `json:"nonce"`
}

// AddResult is add's answer.
type AddResult struct {
	Sum    int64  `json:"sum"`
	Nonce  int64  `json:"nonce"`
	Server string `json:"server"`
}

// Add serves "add".
func (a *adder) Add(_ context.Context, args AddArgs) (AddResult, error) {
	a.served.Add(1)
	return AddResult{Sum: args.A + args.B, Nonce: args.Nonce, Server: a.server}, nil
}

// transportURL lists every node, starting with first, in oslo's multi-host form, so an RPC
// transport fails over to the next node when its node dies.
func transportURL(nodes []*Node, first int) string {
	hosts := make([]string, 0, len(nodes))
	for k := range nodes {
		u := nodes[(first+k)%len(nodes)].AMQPURL
		hosts = append(hosts, strings.TrimSuffix(strings.TrimPrefix(u, "amqp://"), "/"))
	}
	return "amqp://" + strings.Join(hosts, ",") + "/"
}

func newTransport(nodes []*Node, first int, log *slog.Logger) (*rpc.Transport, error) {
	return rpc.NewTransport(transportURL(nodes, first), rpc.TransportOptions{
		DialTimeout:  dialTimeout,
		Heartbeat:    clientHeartbeat,
		ReconnectMin: backoffMin,
		ReconnectMax: backoffMax,
		Logger:       log,
	})
}

// rpcLoad runs one RPC server per node and one caller per node.
type rpcLoad struct {
	nodes    []*Node
	rec      *Recorder
	log      *slog.Logger // chaos events
	rpcLog   *slog.Logger // the rpc library's own logs
	seed     uint64
	interval time.Duration
	servers  []*rpc.Server
	adders   []*adder

	mu         sync.Mutex
	timeouts   map[string]int // by target ("chaos" or "chaos.s2") and 10 s window of the run
	began      time.Time
	transports []*rpc.Transport
}

// serverName is the oslo server name of the RPC server started through node i.
func serverName(i int) string { return fmt.Sprintf("s%d", i) }

// start starts a server on every node; each has its own transport, first connected to its node.
func (l *rpcLoad) start(ctx context.Context) error {
	for k, n := range l.nodes {
		t, err := newTransport(l.nodes, k, l.rpcLog)
		if err != nil {
			return fmt.Errorf("rpc transport for server on %s: %w", n.Name, err)
		}
		l.transports = append(l.transports, t)
		a := &adder{server: serverName(n.Index)}
		l.adders = append(l.adders, a)
		ep, err := rpc.NewEndpoint("", "1.0", a)
		if err != nil {
			return fmt.Errorf("rpc endpoint: %w", err)
		}
		s, err := rpc.NewServer(t, rpc.Target{Topic: rpcTopic, Server: serverName(n.Index)}, []*rpc.Endpoint{ep}, rpc.ServerOptions{Workers: 4})
		if err != nil {
			return fmt.Errorf("rpc server on %s: %w", n.Name, err)
		}
		startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = s.Start(startCtx)
		cancel()
		if err != nil {
			return fmt.Errorf("start rpc server on %s: %w", n.Name, err)
		}
		l.servers = append(l.servers, s)
	}
	return nil
}

// runCallers calls until ctx ends: one caller per node, each on its own transport, alternating
// between the topic (any server) and a named server on a random node.
func (l *rpcLoad) runCallers(ctx context.Context) {
	l.began = time.Now()
	var wg sync.WaitGroup
	for k, n := range l.nodes {
		t, err := newTransport(l.nodes, k, l.rpcLog)
		if err != nil {
			l.log.Error("rpc caller transport", "node", n.Name, "err", err)
			continue
		}
		l.transports = append(l.transports, t)
		rng := rand.New(rand.NewPCG(l.seed, uint64(k)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.caller(ctx, fmt.Sprintf("c%d", n.Index), t, rng)
		}()
	}
	wg.Wait()
}

func (l *rpcLoad) caller(ctx context.Context, name string, t *rpc.Transport, rng *rand.Rand) {
	var nonce int64
	for ctx.Err() == nil {
		nonce++
		target := rpc.Target{Topic: rpcTopic}
		if rng.IntN(2) == 0 {
			target.Server = serverName(l.nodes[rng.IntN(len(l.nodes))].Index)
		}
		args := AddArgs{A: rng.Int64N(1 << 40), B: rng.Int64N(1 << 40), Nonce: nonce}
		c := rpc.NewClient(t, target)
		c.Timeout = callTimeout
		var res AddResult
		// The library bounds the wait for the reply by Timeout, but not every step before it
		// (starting the reply consumer waits on ctx): a call still hanging well past its
		// timeout is a timeout too.
		callCtx, cancel := context.WithTimeout(ctx, 2*callTimeout)
		err := c.CallInto(callCtx, "add", args, &res)
		cancel()
		if ctx.Err() != nil {
			// The run ended mid-call: that call is neither a result nor a timeout.
			return
		}
		call := RPCCall{Want: wantResult(args, target.Server)}
		var remote *rpc.RemoteError
		switch {
		case err == nil:
			call.Replied = true
			call.Got = fmt.Sprintf("sum=%d nonce=%d", res.Sum, res.Nonce)
			if target.Server != "" {
				call.Got += " server=" + res.Server
			}
			call.Detail = fmt.Sprintf("caller %s, answered by %s", name, res.Server)
		case errors.As(err, &remote):
			// A reply, but an exception instead of a sum: a wrong result for add.
			call.Replied = true
			call.Got = "exception " + remote.Class + ": " + remote.Message
			call.Detail = "caller " + name
		default:
			call.Detail = err.Error()
			l.countTimeout(target)
		}
		l.rec.RPC(call)
		if !sleep(ctx, l.interval) {
			return
		}
	}
}

// wantResult renders the answer a call should get, in the form the caller renders replies.
func wantResult(a AddArgs, server string) string {
	s := fmt.Sprintf("sum=%d nonce=%d", a.A+a.B, a.Nonce)
	if server != "" {
		s += " server=" + server
	}
	return s
}

func (l *rpcLoad) countTimeout(target rpc.Target) {
	key := target.Topic
	if target.Server != "" {
		key += "." + target.Server
	}
	key = fmt.Sprintf("%s@%03ds", key, int(time.Since(l.began)/(10*time.Second))*10)
	l.mu.Lock()
	if l.timeouts == nil {
		l.timeouts = map[string]int{}
	}
	l.timeouts[key]++
	l.mu.Unlock()
}

// timeoutsByTarget reports failed calls by target and by the 10 s window of the run they
// started in, so a server that stopped answering shows as a run of windows.
func (l *rpcLoad) timeoutsByTarget() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.timeouts)
}

// served reports how many calls each server answered: a server that stops answering topic
// calls after a fault shows here.
func (l *rpcLoad) served() map[string]int64 {
	out := make(map[string]int64, len(l.adders))
	for _, a := range l.adders {
		out[a.server] = a.served.Load()
	}
	return out
}

// stop stops the servers and closes every transport.
func (l *rpcLoad) stop() {
	for _, s := range l.servers {
		s.Stop()
	}
	for _, t := range l.transports {
		if err := t.Close(); err != nil {
			l.log.Debug("close rpc transport", "err", err)
		}
	}
}
