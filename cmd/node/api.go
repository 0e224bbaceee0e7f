package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"time"
)

// apiClient calls a node's HTTP API with basic auth; the CLI's cluster commands go through it.
type apiClient struct {
	addr, user, pass string
	caFile           string        // --tls-ca: trust for an https:// --http (tlsflags.go)
	timeout          time.Duration // 0: 30 s
}

// apiFlags registers --http, --user and --password on fs; what names the node --http selects.
func apiFlags(fs *flag.FlagSet, what string) *apiClient {
	api := &apiClient{}
	fs.StringVar(&api.addr, "http", envDefault("http", "127.0.0.1:15672"), "HTTP API of "+what+" (env WARREN_HTTP)")
	fs.StringVar(&api.user, "user", envDefault("user", "guest"), "API user (env WARREN_USER)")
	fs.StringVar(&api.pass, "password", envDefault("password", "guest"), "API password (env WARREN_PASSWORD)")
	fs.StringVar(&api.caFile, "tls-ca", envDefault("tls-ca", ""), "PEM CA that signed the node's certificate, for --http https://HOST:PORT (env WARREN_TLS_CA)")
	return api
}

// at is the same client aimed at another node.
func (a apiClient) at(addr string) apiClient {
	a.addr = addr
	return a
}

// call sends in (JSON, when not nil) and decodes the answer into out (when not nil). An answer
// of 300 or more is an error carrying the API's "reason".
func (a apiClient) call(method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequest(method, apiBase(a.addr)+path, &body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.user, a.pass)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	timeout := a.timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	client, err := apiHTTPClient(a.caFile, timeout)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: HTTP %s: %s", method, path, resp.Status, e.Reason)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (a apiClient) do(method, path string, out any) error { return a.call(method, path, nil, out) }

func (a apiClient) get(path string, out any) error { return a.do(http.MethodGet, path, out) }
