package rpc

import (
	"fmt"
	"net/url"
	"strings"
)

// parseTransportURL splits oslo's multi-host transport URL,
// "amqp://u:p@h1:5672,u:p@h2:5673/vhost", into one AMQP URI per host, in
// order. Hosts without credentials inherit those of the previous host (oslo
// lets operators write them once). "rabbit://" is accepted as oslo's own
// scheme; query parameters are ignored.
func parseTransportURL(raw string) ([]string, error) {
	schemeEnd := strings.Index(raw, "://")
	if schemeEnd < 0 {
		return nil, fmt.Errorf("transport url %q: missing scheme", redactURL(raw))
	}
	scheme := strings.ToLower(raw[:schemeEnd])
	switch scheme {
	case "rabbit", "amqp":
		scheme = "amqp"
	case "amqps":
	default:
		return nil, fmt.Errorf("transport url %q: unsupported scheme %q", redactURL(raw), scheme)
	}
	rest := raw[schemeEnd+3:]
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	netloc, path := rest, "/"
	if i := strings.Index(rest, "/"); i >= 0 {
		netloc, path = rest[:i], rest[i:]
	}
	if netloc == "" {
		return nil, fmt.Errorf("transport url %q: no host", redactURL(raw))
	}
	var uris []string
	var lastUserinfo string
	for _, hostPart := range strings.Split(netloc, ",") {
		hostPart = strings.TrimSpace(hostPart)
		if hostPart == "" {
			continue
		}
		userinfo, hostport := "", hostPart
		if at := strings.LastIndex(hostPart, "@"); at >= 0 {
			userinfo, hostport = hostPart[:at], hostPart[at+1:]
			lastUserinfo = userinfo
		} else {
			userinfo = lastUserinfo
		}
		if hostport == "" {
			return nil, fmt.Errorf("transport url %q: empty host", redactURL(raw))
		}
		uri := scheme + "://"
		if userinfo != "" {
			uri += userinfo + "@"
		}
		uri += hostport + path
		if _, err := url.Parse(uri); err != nil {
			return nil, fmt.Errorf("transport url host %q: %w", hostport, err)
		}
		uris = append(uris, uri)
	}
	if len(uris) == 0 {
		return nil, fmt.Errorf("transport url %q: no host", redactURL(raw))
	}
	return uris, nil
}

// redactURL hides passwords so URLs can go into errors and logs.
func redactURL(raw string) string {
	schemeEnd := strings.Index(raw, "://")
	if schemeEnd < 0 {
		return raw
	}
	rest := raw[schemeEnd+3:]
	netloc, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		netloc, tail = rest[:i], rest[i:]
	}
	parts := strings.Split(netloc, ",")
	for i, p := range parts {
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		user := p[:at]
		if c := strings.Index(user, ":"); c >= 0 {
			user = user[:c] + ":xxxxx"
		}
		parts[i] = user + p[at:]
	}
	return raw[:schemeEnd+3] + strings.Join(parts, ",") + tail
}
