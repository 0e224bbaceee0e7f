package mgmt

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"github.com/warrenmq/warren/broker"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// principal is the user a request acts as. The password is kept for the request's AMQP
// connection to this node.
type principal struct {
	name, password string
	tags           []string
	peer           bool // another node of the cluster (signed with the cluster secret)
}

func (p *principal) has(tag string) bool { return p.peer || slices.Contains(p.tags, tag) }

func (p *principal) isAdmin() bool { return p.has("administrator") }

// isMonitor: RabbitMQ's monitoring tag, implied by administrator; such users see every
// vhost's objects and every connection.
func (p *principal) isMonitor() bool { return p.isAdmin() || p.has("monitoring") }

// isManagement: any tag that gives access to the management API.
func (p *principal) isManagement() bool {
	return p.isMonitor() || p.has("management") || p.has("policymaker")
}

type accessLevel int

const (
	levelManagement accessLevel = iota
	levelMonitoring
	levelAdministrator
)

type handler func(http.ResponseWriter, *http.Request, *principal)

// authenticate reads HTTP basic credentials (also sent by the console's login form) and checks
// them as RabbitMQ does: 401 for a failed login, a loopback-only user from elsewhere, or a
// user without a management tag.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) *principal {
	user, pass, ok := r.BasicAuth()
	if !ok {
		if c, err := r.Cookie("warren_auth"); err == nil {
			user, pass, ok = parseAuthCookie(c.Value)
		}
	}
	var hash string
	var tags []string
	found := false
	if ok {
		hash, tags, found = s.src.Node.FSM().User(user)
	}
	if !found || !broker.CheckPassword(hash, pass) {
		if r.Header.Get("X-Warren-Console") == "" {
			// The console shows its own login form instead of the browser's dialog.
			w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		}
		writeError(w, http.StatusUnauthorized, "not_authorized", "Login failed")
		return nil
	}
	if s.src.AMQP != nil && s.src.AMQP.IsLoopbackUser(user) && !fromLoopback(r) {
		writeError(w, http.StatusUnauthorized, "not_authorized", "User can only log in via localhost")
		return nil
	}
	p := &principal{name: user, password: pass, tags: tags}
	if !p.isManagement() {
		writeError(w, http.StatusUnauthorized, "not_authorised", "Not management user")
		return nil
	}
	return p
}

func parseAuthCookie(v string) (user, pass string, ok bool) {
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authed wraps a handler with authentication and the tag the endpoint needs. Another node's
// signed call passes as administrator.
func (s *Server) authed(level accessLevel, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p *principal
		if s.validPeer(r) {
			p = &principal{name: "warren-peer", peer: true}
		} else if p = s.authenticate(w, r); p == nil {
			return
		}
		switch {
		case level == levelAdministrator && !p.isAdmin():
			writeError(w, http.StatusUnauthorized, "not_authorised", "Not administrator user")
			return
		case level == levelMonitoring && !p.isMonitor():
			writeError(w, http.StatusUnauthorized, "not_authorised", "Not monitor user")
			return
		}
		h(w, r, p)
		if r.Method != http.MethodGet && !p.peer {
			// The answer is still buffered: it leaves once every node has the change.
			s.syncCluster(p)
		}
	}
}

// canSee reports whether p may see a vhost's objects: monitors see all, others the vhosts they
// have permissions in.
func (s *Server) canSee(p *principal, vhost string) bool {
	if p.isMonitor() {
		return true
	}
	_, ok := s.src.Node.FSM().Permissions(p.name, vhost)
	return ok
}

// vhostAccess answers 404 for a vhost that does not exist and 401 for one the user has no
// permissions in (RabbitMQ's order); true when the request may go on.
func (s *Server) vhostAccess(w http.ResponseWriter, p *principal, vhost string, write bool) bool {
	if !s.src.Node.FSM().VhostExists(vhost) {
		if write {
			writeError(w, http.StatusNotFound, "not_found", "vhost_not_found")
		} else {
			notFound(w)
		}
		return false
	}
	if p.peer {
		return true
	}
	if _, ok := s.src.Node.FSM().Permissions(p.name, vhost); ok {
		return true
	}
	writeError(w, http.StatusUnauthorized, "not_authorised", "User not authorised to access virtual host")
	return false
}

const peerHeader = "X-Warren-Peer"

// peerToken proves a call comes from a node holding the cluster secret: an HMAC of the time,
// method and path, accepted for a minute, so a token seen on the wire opens nothing else.
// Without a cluster secret there are no peer tokens (calls carry the user's credentials).
func (s *Server) peerToken(now time.Time, method, path string) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	return ts + ":" + s.peerMAC(ts, method, path)
}

func (s *Server) peerMAC(ts, method, path string) string {
	mac := hmac.New(sha256.New, []byte(s.src.ClusterSecret))
	mac.Write([]byte("warren management peer call\n" + ts + "\n" + method + "\n" + path))
	return hex.EncodeToString(mac.Sum(nil))
}

func (s *Server) validPeer(r *http.Request) bool {
	got := r.Header.Get(peerHeader)
	if got == "" || s.src.ClusterSecret == "" {
		return false
	}
	ts, sig, ok := strings.Cut(got, ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(s.peerMAC(ts, r.Method, strings.ReplaceAll(r.URL.Path, slashMark, "/"))))
}

// peerOnly serves Warren's node-to-node endpoints: other nodes, or (in a cluster without a
// secret) a monitoring user.
func (s *Server) peerOnly(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return s.authed(levelMonitoring, func(w http.ResponseWriter, r *http.Request, _ *principal) { h(w, r) })
}
