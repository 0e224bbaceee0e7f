package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// runFailover measures what a publisher with confirms sees when the node serving its queue dies.
// The queue is declared through -owner-url (so its leader lands there) and the publisher connects
// through -url, a node that stays up. After -kill-after, -kill-cmd kills the leader's node and
// reports when it sent the signal; the figure is the time from that signal to the first positive
// confirm of a message published after it. A message in flight at the kill may be confirmed by
// the old leader's last packets, so only publishes sent after the kill count. How the cluster
// reacts (nack, retry, wait) is the broker's business: a client simply sees no confirm until then.
func runFailover(ctx context.Context, cfg config, names *runNames, _ *rssSampler) (res result, err error) {
	res = result{SizeBytes: cfg.messageSize}
	queue := names.name("q")
	var created createdTopology
	// The owner node is the one killed, so clean up through the node that stays up.
	defer created.cleanup(cfg.url, &err)
	if err := declareFlowTopology(ctx, cfg.ownerURL(), "", []string{queue}, true, cfg.queueArgs(), &created); err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, cfg.afterDeclare); err != nil {
		return res, err
	}
	conn, ch, err := openChannel(ctx, cfg.url, "publisher")
	if err != nil {
		return res, err
	}
	defer closeConnection(conn, "publisher")
	if err := ch.Confirm(false); err != nil {
		return res, fmt.Errorf("enabling publisher confirms: %w", err)
	}

	var (
		killedAt   atomic.Int64 // unix nanos of the kill signal, 0 before it
		lastBefore atomic.Int64 // unix nanos of the last positive confirm received before the kill
		firstAfter atomic.Int64 // unix nanos of the first positive confirm of a publish after the kill
		acked      atomic.Int64
		nacked     atomic.Int64
		published  atomic.Int64
	)
	recovered := make(chan struct{})
	var recoveredOnce sync.Once
	stop := make(chan struct{})
	pending := make(chan pendingConfirm, cfg.confirmWindow)
	var wg sync.WaitGroup
	wg.Add(2)
	var pubErr error
	go func() { // the publisher: at most -confirm-window unconfirmed publishes
		defer wg.Done()
		defer close(pending)
		for {
			select {
			case <-stop:
				return
			default:
			}
			msg := amqp.Publishing{Body: stampedBody(cfg.messageSize), DeliveryMode: amqp.Persistent}
			sentAt := time.Now()
			dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, msg)
			if err != nil {
				select {
				case <-stop:
				default:
					pubErr = fmt.Errorf("publishing: %w", err)
				}
				return
			}
			published.Add(1)
			select {
			case pending <- pendingConfirm{confirmation: dc, sentAt: sentAt}:
			case <-stop:
				return
			}
		}
	}()
	go func() { // confirms arrive in publish order on one channel, so wait for the oldest
		defer wg.Done()
		for p := range pending {
			select {
			case <-p.confirmation.Done():
			case <-stop:
				for range pending {
				}
				return
			}
			now := time.Now().UnixNano()
			if !p.confirmation.Acked() {
				nacked.Add(1)
				continue
			}
			acked.Add(1)
			k := killedAt.Load()
			switch {
			case k == 0 || now < k:
				lastBefore.Store(now)
			case p.sentAt.UnixNano() > k:
				recoveredOnce.Do(func() {
					firstAfter.Store(now)
					close(recovered)
				})
			}
		}
	}()
	finish := func() {
		close(stop)
		// A publish blocked on a dead connection only ends when the connection closes.
		if !waitTimeout(&wg, 3*time.Second) {
			closeConnection(conn, "publisher")
			wg.Wait()
		}
		res.Published, res.Nacked = count(published.Load()), count(nacked.Load())
	}

	select {
	case <-time.After(cfg.killAfter):
	case <-ctx.Done():
		finish()
		return res, fmt.Errorf("failover interrupted before the kill: %w", ctx.Err())
	}
	if acked.Load() == 0 {
		finish()
		return res, fmt.Errorf("no publish was confirmed in the %v before the kill", cfg.killAfter)
	}
	at, what, err := runKillCommand(ctx, cfg.killCmd, queue)
	if err != nil {
		finish()
		return res, err
	}
	killedAt.Store(at.UnixNano())
	res.Note = "killed " + what
	timeout := time.NewTimer(cfg.failoverTimeout)
	defer timeout.Stop()
	select {
	case <-recovered:
	case <-timeout.C:
		finish()
		return res, fmt.Errorf("no confirm within %v of the kill (%d nacked, publisher error: %v)", cfg.failoverTimeout, nacked.Load(), pubErr)
	case <-ctx.Done():
		finish()
		return res, fmt.Errorf("failover interrupted after the kill: %w", ctx.Err())
	}
	finish()
	first := firstAfter.Load()
	res.FailoverMillis = num(float64(first-at.UnixNano()) / 1e6)
	res.ConfirmGapMillis = num(float64(first-lastBefore.Load()) / 1e6)
	res.DurationSec = round(time.Duration(first-at.UnixNano()).Seconds()+cfg.killAfter.Seconds(), 3)
	if pubErr != nil {
		return res, pubErr
	}
	return res, nil
}

// runKillCommand runs the kill command with the queue name as its last argument and returns the
// moment it reports sending the kill, from its last "killed UNIX_NANOS [WHAT]" line.
func runKillCommand(ctx context.Context, command, queue string) (time.Time, string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", command+` "$1"`, "sh", queue)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return time.Time{}, "", fmt.Errorf("kill command %q: %w (stderr: %s)", command, err, strings.TrimSpace(stderr.String()))
	}
	at, what, err := parseKillLine(stdout.String())
	if err != nil {
		return time.Time{}, "", fmt.Errorf("kill command %q: %w", command, err)
	}
	return at, what, nil
}

func parseKillLine(out string) (time.Time, string, error) {
	var line string
	scanner := bufio.NewScanner(strings.NewReader(out))
	for scanner.Scan() {
		if t := strings.TrimSpace(scanner.Text()); strings.HasPrefix(t, "killed ") {
			line = t
		}
	}
	if line == "" {
		return time.Time{}, "", errors.New(`printed no "killed UNIX_NANOS" line`)
	}
	fields := strings.SplitN(line, " ", 3)
	nanos, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || nanos <= 0 {
		return time.Time{}, "", fmt.Errorf("bad kill time in %q", line)
	}
	what := ""
	if len(fields) == 3 {
		what = fields[2]
	}
	return time.Unix(0, nanos), what, nil
}
