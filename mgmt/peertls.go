package mgmt

import (
	"crypto/tls"
	"net/http"
	"strings"
)

// peerURL is the base URL of another node's API from its gossip address: host:port for plain
// http, an https:// URL for a node that serves its API only over TLS.
func peerURL(addr string) string {
	if strings.HasPrefix(addr, "https://") || strings.HasPrefix(addr, "http://") {
		return addr
	}
	return "http://" + addr
}

// peerTransport is the transport of calls to other nodes' APIs: Go's default one, with cfg
// for https peers when given.
func peerTransport(cfg *tls.Config) http.RoundTripper {
	if cfg == nil {
		return http.DefaultTransport
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	return t
}
