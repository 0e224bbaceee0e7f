package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles are the operator's certificates for node-to-node links (--cluster-tls-*): every
// Raft, forwarding and data-link connection is then mutual TLS on top of the secret's
// handshake, and a peer must hold a certificate signed by CA. Gossip stays encrypted with the
// secret (memberlist has no TLS).
type TLSFiles struct {
	Cert, Key, CA string
}

// NodeTLS is the pair of TLS settings of node links: Server for accepted connections,
// Client for dialled ones.
type NodeTLS struct {
	Server, Client *tls.Config
}

// LoadNodeTLS reads the files. Peers are dialled by address, so a client checks the server's
// chain against CA but not a host name: any certificate of the cluster's CA is a member.
func LoadNodeTLS(f TLSFiles) (*NodeTLS, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("cluster tls: --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster tls: load %s and %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("cluster tls: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster tls: no PEM certificate in %s", f.CA)
	}
	verify := func(usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster tls: peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
			return err
		}
	}
	return &NodeTLS{
		Server: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		},
		Client: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			// The chain is checked by VerifyConnection, without a host name.
			InsecureSkipVerify: true, //nolint:gosec
			VerifyConnection:   verify(x509.ExtKeyUsageServerAuth),
		},
	}, nil
}
