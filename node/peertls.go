package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// peerAPITLS is how this node's API checks another node's API served over https only (the
// cluster-wide views, closing a connection elsewhere, forwarded declares): the chain against
// the CAs the operator gave (--tls-ca, --cluster-tls-ca), not a host name, as node links do:
// nodes call each other by address, which a certificate rarely names. nil without such a CA
// (system roots and host names then apply). The calls themselves carry the cluster secret's
// token; TLS keeps them private.
func peerAPITLS(cfg Config) (*tls.Config, error) {
	var files []string
	if cfg.TLS != nil && cfg.TLS.CA != "" {
		files = append(files, cfg.TLS.CA)
	}
	if cfg.ClusterTLS != nil && cfg.ClusterTLS.CA != "" {
		files = append(files, cfg.ClusterTLS.CA)
	}
	if len(files) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("peer api tls: read CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("peer api tls: no PEM certificate in %s", f)
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is checked by VerifyConnection, without a host name.
		InsecureSkipVerify: true, //nolint:gosec
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer api tls: the node sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	}, nil
}
