package pki

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

// TestIssuedCertificatesVerify: a node certificate verifies for its hosts as a server and as a
// client; a client certificate carries its user name as CN and does not serve TLS.
func TestIssuedCertificatesVerify(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	parse := func(i Issued) *x509.Certificate {
		b, _ := pem.Decode(i.CertPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	nodeCert, err := ca.Issue("n1", []string{"n1", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nc := parse(nodeCert)
	for _, host := range []string{"n1", "127.0.0.1"} {
		if _, err := nc.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("node certificate for %s: %v", host, err)
		}
	}
	if _, err := nc.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other"}); err == nil {
		t.Error("node certificate verified for a host it does not name")
	}
	client, err := ca.Issue("alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc := parse(client)
	if _, err := cc.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cc.Subject.CommonName != "alice" {
		t.Errorf("client certificate: CN %q, %v", cc.Subject.CommonName, err)
	}
	if _, err := cc.Verify(x509.VerifyOptions{Roots: roots}); err == nil {
		t.Error("a client certificate verified as a server certificate")
	}
	other, _ := NewCA("other", time.Hour)
	stranger, _ := other.Issue("n1", []string{"n1"}, time.Hour)
	if _, err := parse(stranger).Verify(x509.VerifyOptions{Roots: roots, DNSName: "n1"}); err == nil {
		t.Error("a certificate of another CA verified")
	}
}
