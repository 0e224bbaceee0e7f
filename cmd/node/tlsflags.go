package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/server"
)

// tlsFlags are the client-facing TLS settings of `node run`.
type tlsFlags struct {
	amqpsAddr, httpsAddr, cert, key, ca *string
	verifyPeer, only                    *bool
	clusterCert, clusterKey, clusterCA  *string
}

func addTLSFlags(fs *flag.FlagSet, str func(name, def, help string) *string) *tlsFlags {
	return &tlsFlags{
		amqpsAddr:   str("amqps-addr", "", "AMQP over TLS listen address, e.g. 127.0.0.1:5671 (empty: off)"),
		httpsAddr:   str("https-addr", "", "HTTP API over TLS listen address, e.g. 127.0.0.1:15671 (empty: off)"),
		cert:        str("tls-cert", "", "PEM certificate (chain) of the amqps/https listeners; re-read on SIGHUP"),
		key:         str("tls-key", "", "PEM private key of --tls-cert; re-read on SIGHUP"),
		ca:          str("tls-ca", "", "PEM CA certificates that sign client certificates"),
		verifyPeer:  fs.Bool("tls-verify-peer", os.Getenv("WARREN_TLS_VERIFY_PEER") == "true", "require a client certificate signed by --tls-ca; such clients may log in with EXTERNAL as the certificate's CN (env WARREN_TLS_VERIFY_PEER=true)"),
		clusterCert: str("cluster-tls-cert", "", "PEM certificate of this node for mutual TLS on Raft, forwarding and data links (with --cluster-tls-key and --cluster-tls-ca; on top of the cluster secret)"),
		clusterKey:  str("cluster-tls-key", "", "PEM private key of --cluster-tls-cert"),
		clusterCA:   str("cluster-tls-ca", "", "PEM CA that signs every node's --cluster-tls-cert"),
		only:        fs.Bool("tls-only", os.Getenv("WARREN_TLS_ONLY") == "true", "open no plaintext client listener: --amqp-addr and --http-addr default to off and are refused if given (env WARREN_TLS_ONLY=true)"),
	}
}

// settle applies --tls-only to the plaintext addresses: their defaults are dropped, an
// address the operator gave explicitly stays so that starting fails with the reason.
func (t *tlsFlags) settle(fs *flag.FlagSet, amqpAddr, httpAddr *string) error {
	if (*t.cert == "") != (*t.key == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if !*t.only {
		return nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, addr := range map[string]*string{"amqp-addr": amqpAddr, "http-addr": httpAddr} {
		if _, env := os.LookupEnv(envKey(name)); !given[name] && !env {
			*addr = ""
		}
	}
	return nil
}

func (t *tlsFlags) clusterFiles() *cluster.TLSFiles {
	if *t.clusterCert == "" && *t.clusterKey == "" && *t.clusterCA == "" {
		return nil
	}
	return &cluster.TLSFiles{Cert: *t.clusterCert, Key: *t.clusterKey, CA: *t.clusterCA}
}

func (t *tlsFlags) files() *server.TLSFiles {
	if *t.cert == "" {
		return nil
	}
	return &server.TLSFiles{Cert: *t.cert, Key: *t.key, CA: *t.ca, VerifyPeer: *t.verifyPeer}
}

// apiBase is the URL prefix of a node's API: --http takes HOST:PORT (plain http) or a URL,
// https:// for a node serving the API with --https-addr.
func apiBase(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

// apiHTTPClient trusts caFile (when given) for https API addresses.
func apiHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	c := &http.Client{Timeout: timeout}
	if caFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", caFile)
	}
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return c, nil
}
