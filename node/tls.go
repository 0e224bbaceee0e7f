package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/warrenmq/warren/mgmt"
	"github.com/warrenmq/warren/server"
)

// checkTLSConfig refuses settings that would leave a client listener without the TLS the
// operator asked for.
func checkTLSConfig(cfg Config) error {
	if (cfg.AMQPSAddr != "" || cfg.HTTPSAddr != "") && cfg.TLS == nil {
		return errors.New("amqps/https listeners need a certificate and key (--tls-cert, --tls-key)")
	}
	if cfg.TLSOnly {
		if cfg.AMQPAddr != "" {
			return fmt.Errorf("tls-only: refusing a plaintext AMQP listener on %s (drop --amqp-addr)", cfg.AMQPAddr)
		}
		if cfg.HTTPAddr != "" {
			return fmt.Errorf("tls-only: refusing a plaintext HTTP listener on %s (drop --http-addr)", cfg.HTTPAddr)
		}
		if cfg.AMQPSAddr == "" {
			return errors.New("tls-only: no client listener (set --amqps-addr)")
		}
	}
	if cfg.AMQPAddr == "" && cfg.AMQPSAddr == "" {
		return errors.New("no AMQP listener: set an amqp or amqps address")
	}
	return nil
}

// listenTLS opens the amqps and https listeners, sharing one certificate source.
func (n *Node) listenTLS(api mgmt.Source) error {
	if n.cfg.TLS == nil || n.cfg.AMQPSAddr == "" && n.cfg.HTTPSAddr == "" {
		return nil
	}
	src, err := server.NewTLSSource(*n.cfg.TLS, n.log)
	if err != nil {
		return err
	}
	n.TLS = src
	if n.cfg.AMQPSAddr != "" {
		if err := n.AMQP.ListenTLS(n.cfg.AMQPSAddr, src); err != nil {
			return err
		}
	}
	if n.cfg.HTTPSAddr != "" {
		ln, err := net.Listen("tcp", n.cfg.HTTPSAddr)
		if err != nil {
			return fmt.Errorf("listen https on %s: %w", n.cfg.HTTPSAddr, err)
		}
		n.HTTPS = mgmt.Serve(tls.NewListener(ln, src.Config()), api, n.log)
	}
	return nil
}

// ErrNoTLS is ReloadTLS on a node without certificates.
var ErrNoTLS = errors.New("no TLS certificates to reload")

// ReloadTLS reads the certificate files again (SIGHUP), of the client listeners and of node
// links: new handshakes use them, open connections are kept. On an error the previous
// certificates stay in use.
func (n *Node) ReloadTLS() error {
	if n.TLS == nil && n.clusterTLS == nil {
		return ErrNoTLS
	}
	var errs []error
	if n.TLS != nil {
		errs = append(errs, n.TLS.Reload())
	}
	if n.clusterTLS != nil {
		if err := n.clusterTLS.Reload(); err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("cluster tls: certificates reloaded")
		}
	}
	return errors.Join(errs...)
}

// AMQPSAddr returns the amqps listener's address ("" without one).
func (n *Node) AMQPSAddr() string {
	if a := n.AMQP.TLSAddr(); a != nil {
		return a.String()
	}
	return ""
}

// clientAddr is the AMQP address announced to the cluster: the plain one, else amqps.
func (n *Node) clientAddr() string {
	if a := n.AMQPAddr(); a != "" {
		return a
	}
	return n.AMQPSAddr()
}
