package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// TLSFiles are the operator's certificates for node-to-node links (--cluster-tls-*): every
// Raft, forwarding and data-link connection is then mutual TLS on top of the secret's
// handshake, and a peer must hold a certificate signed by CA. Gossip stays encrypted with the
// secret (memberlist has no TLS).
type TLSFiles struct {
	Cert, Key, CA string
}

// NodeTLS is the pair of TLS settings of node links: Server for accepted connections,
// Client for dialled ones. Reload swaps in new files for later handshakes.
type NodeTLS struct {
	Server, Client *tls.Config

	files TLSFiles
	cur   atomic.Pointer[nodeCreds]
}

type nodeCreds struct {
	cert tls.Certificate
	pool *x509.CertPool
}

func loadCreds(f TLSFiles) (*nodeCreds, error) {
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
	return &nodeCreds{cert: cert, pool: pool}, nil
}

// LoadNodeTLS reads the files. Peers are dialled by address, so both sides check the other's
// chain against CA but not a host name: any certificate of the cluster's CA is a member.
func LoadNodeTLS(f TLSFiles) (*NodeTLS, error) {
	creds, err := loadCreds(f)
	if err != nil {
		return nil, err
	}
	n := &NodeTLS{files: f}
	n.cur.Store(creds)
	verify := func(usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster tls: peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: n.cur.Load().pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
			return err
		}
	}
	n.Server = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &n.cur.Load().cert, nil
		},
		// Verified by VerifyConnection against the current CA, so a reload takes effect.
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verify(x509.ExtKeyUsageClientAuth),
	}
	n.Client = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &n.cur.Load().cert, nil
		},
		// The chain is checked by VerifyConnection, without a host name.
		InsecureSkipVerify: true, //nolint:gosec
		VerifyConnection:   verify(x509.ExtKeyUsageServerAuth),
	}
	return n, nil
}

// Reload reads the files again (SIGHUP); on an error the previous ones stay in use. Links
// already open keep their session.
func (n *NodeTLS) Reload() error {
	creds, err := loadCreds(n.files)
	if err != nil {
		return err
	}
	n.cur.Store(creds)
	return nil
}
