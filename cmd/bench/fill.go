package main

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// runFill publishes -count persistent messages with confirms into the durable queue -queue and
// leaves them there (no consumer, no clean-up): scripts/bench-recovery.sh then kills and
// restarts the broker to time its recovery.
func runFill(ctx context.Context, cfg config, _ *runNames, _ *rssSampler) (result, error) {
	res := result{SizeBytes: cfg.messageSize}
	conn, ch, err := openChannel(ctx, cfg.url, "fill")
	if err != nil {
		return res, err
	}
	defer closeConnection(conn, "fill")
	if _, err := ch.QueueDeclare(cfg.fillQueue, true, false, false, false, cfg.queueArgs()); err != nil {
		return res, fmt.Errorf("declaring %s: %w", cfg.fillQueue, err)
	}
	if err := sleepCtx(ctx, cfg.afterDeclare); err != nil {
		return res, err
	}
	if err := ch.Confirm(false); err != nil {
		return res, fmt.Errorf("enabling confirms: %w", err)
	}
	inFlight := make(chan *amqp.DeferredConfirmation, cfg.confirmWindow)
	errs := make(chan error, 1)
	go func() {
		for dc := range inFlight {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				errs <- fmt.Errorf("confirm: ok=%v err=%v", ok, err)
				for range inFlight {
				}
				return
			}
		}
		errs <- nil
	}()
	body := make([]byte, cfg.messageSize)
	start := time.Now()
	var published int64
	for ; published < int64(cfg.fillCount); published++ {
		dc, err := ch.PublishWithDeferredConfirm("", cfg.fillQueue, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			close(inFlight)
			<-errs
			return res, fmt.Errorf("publish %d: %w", published, err)
		}
		inFlight <- dc
	}
	close(inFlight)
	if err := <-errs; err != nil {
		return res, err
	}
	elapsed := time.Since(start).Seconds()
	res.DurationSec = round(elapsed, 3)
	res.MsgsPerSec = perSecond(published, elapsed)
	res.Published = count(published)
	return res, nil
}
