package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/warrenmq/warren/pki"
)

// runCerts writes a throw-away CA and certificates for a development cluster: one per node
// (serving amqps/https, and usable as a client certificate) and one per client user (CN =
// user name, for SASL EXTERNAL). No openssl needed.
func runCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./certs", "directory to write ca.pem, ca-key.pem, NODE.pem/NODE-key.pem and client-USER.pem/-key.pem into")
	nodes := fs.String("nodes", "node", "comma-separated node names; each gets a certificate for them and --hosts")
	hosts := fs.String("hosts", "127.0.0.1,::1,localhost", "comma-separated host names and IPs every node certificate is valid for")
	clients := fs.String("clients", "", "comma-separated user names to issue client certificates for (CN = user name)")
	days := fs.Int("days", 365, "validity in days")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *days <= 0 {
		fmt.Fprintln(stderr, "node certs: unexpected arguments (see --help)")
		return 2
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "node certs: %v\n", err)
		return 1
	}
	valid := time.Duration(*days) * 24 * time.Hour
	fail := func(err error) int {
		fmt.Fprintf(stderr, "node certs: %v\n", err)
		return 1
	}
	ca, err := pki.NewCA("Warren dev CA", valid)
	if err != nil {
		return fail(err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return fail(err)
	}
	caFiles := pki.Issued{CertPEM: ca.CertPEM, KeyPEM: caKey}
	if err := caFiles.WriteAs(filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "CA:     %s\n", filepath.Join(*dir, "ca.pem"))
	for _, name := range splitList(*nodes) {
		issued, err := ca.Issue(name, append([]string{name}, splitList(*hosts)...), valid)
		if err != nil {
			return fail(err)
		}
		cert, key, err := issued.Write(*dir, name)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "node:   %s %s\n", cert, key)
	}
	for _, user := range splitList(*clients) {
		issued, err := ca.Issue(user, nil, valid)
		if err != nil {
			return fail(err)
		}
		cert, key, err := issued.Write(*dir, "client-"+user)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "client: %s %s\n", cert, key)
	}
	return 0
}
