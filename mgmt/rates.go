package mgmt

import (
	"sync"
	"time"

	"github.com/warrenmq/warren/server"
)

// sampleEvery is how often the sampler records the node's counters; rates are taken over
// rateWindow, as RabbitMQ's basic rates mode reports the last few seconds.
const (
	sampleEvery = time.Second
	rateWindow  = 5 * time.Second
	keepSamples = 120
)

// sample is the node's counters at one instant.
type sample struct {
	at     time.Time
	msgs   server.MessageStats
	depths map[string]int // queue key → ready+unacked, for queues this node owns
}

// sampler keeps the recent samples of this node; its goroutine ends with stop.
type sampler struct {
	take func() sample
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	history []sample
}

func startSampler(take func() sample) *sampler {
	sp := &sampler{take: take, quit: make(chan struct{}), done: make(chan struct{})}
	sp.record()
	go sp.run()
	return sp
}

func (sp *sampler) run() {
	defer close(sp.done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-sp.quit:
			return
		case <-t.C:
			sp.record()
		}
	}
}

func (sp *sampler) record() {
	smp := sp.take()
	sp.mu.Lock()
	sp.history = append(sp.history, smp)
	if len(sp.history) > keepSamples {
		sp.history = append(sp.history[:0], sp.history[len(sp.history)-keepSamples:]...)
	}
	sp.mu.Unlock()
}

func (sp *sampler) stop() {
	close(sp.quit)
	<-sp.done
}

// rates returns per-second rates of the message counters and of each queue's depth over the
// last rateWindow (zero until two samples exist).
func (sp *sampler) rates(now sample) (msgs messageRates, depth map[string]float64) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	depth = map[string]float64{}
	if len(sp.history) == 0 {
		return
	}
	old := sp.history[0]
	for i := len(sp.history) - 1; i >= 0; i-- {
		if now.at.Sub(sp.history[i].at) >= rateWindow {
			old = sp.history[i]
			break
		}
	}
	secs := now.at.Sub(old.at).Seconds()
	if secs <= 0 {
		return
	}
	per := func(a, b uint64) float64 {
		if a < b {
			return 0
		}
		return float64(a-b) / secs
	}
	msgs = messageRates{
		Publish: per(now.msgs.Publish, old.msgs.Publish), Deliver: per(now.msgs.Deliver, old.msgs.Deliver),
		Get: per(now.msgs.Get, old.msgs.Get), Ack: per(now.msgs.Ack, old.msgs.Ack),
		Redeliver: per(now.msgs.Redeliver, old.msgs.Redeliver),
	}
	for k, d := range now.depths {
		if od, ok := old.depths[k]; ok {
			depth[k] = float64(d-od) / secs
		}
	}
	return
}

// messageRates are per-second rates of server.MessageStats.
type messageRates struct {
	Publish, Deliver, Get, Ack, Redeliver float64
}
