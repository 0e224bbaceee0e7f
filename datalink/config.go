package datalink

import (
	"crypto/tls"
	"log/slog"
	"time"
)

// Config is shared by both ends of a link. Zero fields take the defaults below.
type Config struct {
	NodeID string
	// Secret is the shared cluster secret. A peer that cannot prove it knows the secret is
	// refused (HMAC-SHA256 challenge-response in both directions, keyed by
	// SHA-256("warren-datalink\x00"+Secret)).
	Secret string
	// ServerTLS and ClientTLS, when set, wrap accepted and dialled links in mutual TLS
	// (--cluster-tls-*) under the secret's handshake.
	ServerTLS, ClientTLS *tls.Config
	Logger               *slog.Logger
	// MaxBuffered is how many unsent bytes of publishes and deliveries one link keeps before
	// publishers block and Deliverer.Deliver refuses; default 8 MiB.
	MaxBuffered int

	// HeartbeatInterval is how often an idle link sends a heartbeat; default 1 s.
	HeartbeatInterval time.Duration
	// PeerTimeout is how long a link may receive nothing before it is declared dead (a
	// partitioned or frozen peer does not close its socket); default 5 s.
	PeerTimeout time.Duration
	// DialTimeout bounds one TCP connect plus handshake; default 5 s.
	DialTimeout time.Duration
	// ConnectWait is how long requests made right after Dial wait for the first connection
	// before failing with ErrLinkDown. Once a link has been up, requests made while it is down
	// fail at once (the broker nacks rather than stalls); default 3 s.
	ConnectWait time.Duration
	// ReconnectMin and ReconnectMax bound the exponential reconnect backoff; defaults 50 ms
	// and 2 s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 8 << 20
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = 5 * time.Second
	}
	if c.PeerTimeout < 2*c.HeartbeatInterval {
		c.PeerTimeout = 2 * c.HeartbeatInterval
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ConnectWait <= 0 {
		c.ConnectWait = 3 * time.Second
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 50 * time.Millisecond
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = max(2*time.Second, c.ReconnectMin)
	}
	if len(c.NodeID) > maxNameLen {
		c.NodeID = c.NodeID[:maxNameLen]
	}
	return c
}
