package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	amqp "github.com/rabbitmq/amqp091-go"
)

// tlsSettings turns -ca, -cert and -key into the connection's TLS settings: the server's
// certificate is checked against the CA (amqps URLs), and a client certificate logs in with
// SASL EXTERNAL (the user is the certificate's CN) instead of the URL's password.
func tlsSettings(caFile, certFile, keyFile string) (*tls.Config, []amqp.Authentication, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, nil, errors.New("-cert and -key go together")
	}
	if caFile == "" {
		if certFile != "" {
			return nil, nil, errors.New("-cert needs -ca")
		}
		return nil, nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read -ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("-ca %s holds no PEM certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile == "" {
		return cfg, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("load -cert/-key: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, []amqp.Authentication{&amqp.ExternalAuth{}}, nil
}
