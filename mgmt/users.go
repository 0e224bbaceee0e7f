package mgmt

import (
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/server"
)

// apply commits an FSM command for the API; a refusal is answered and false returned.
func (s *Server) apply(w http.ResponseWriter, c fsm.Command) (fsm.Result, bool) {
	res, err := s.src.Node.Apply(c)
	if err != nil {
		var fe *fsm.Error
		if errors.As(err, &fe) {
			status := http.StatusBadRequest
			if fe.Code == fsm.CodeNotFound {
				status = http.StatusNotFound
			}
			writeError(w, status, "bad_request", fe.Text)
		} else {
			writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		}
		return res, false
	}
	return res, true
}

func (s *Server) whoami(w http.ResponseWriter, _ *http.Request, p *principal) {
	tags := p.tags
	if tags == nil {
		tags = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": p.name, "tags": tags})
}

// ---- vhosts

func (s *Server) vhostJSON(name string, stats map[string]queueSample) map[string]any {
	ready, unacked := 0, 0
	for _, q := range stats {
		if q.Vhost == name {
			ready, unacked = ready+q.Ready, unacked+q.Unacked
		}
	}
	out := map[string]any{
		"name": name, "description": "", "tags": []string{}, "tracing": false, "metadata": map[string]any{"description": "", "tags": []string{}},
	}
	// As RabbitMQ: message counts only for a vhost that has queues.
	if len(s.src.Node.FSM().Queues(name)) > 0 {
		out["messages"], out["messages_ready"], out["messages_unacknowledged"] = ready+unacked, ready, unacked
	}
	return out
}

func (s *Server) listVhosts(w http.ResponseWriter, r *http.Request, p *principal) {
	stats := queueStats(s.clusterStats(p))
	var out []map[string]any
	for _, v := range s.src.Node.FSM().Vhosts() {
		if s.canSee(p, v) {
			out = append(out, s.vhostJSON(v, stats))
		}
	}
	writeList(w, r, out)
}

func (s *Server) showVhost(w http.ResponseWriter, r *http.Request, p *principal) {
	v := pathValue(r, "vhost")
	if !s.vhostAccess(w, p, v, false) {
		return
	}
	writeJSON(w, http.StatusOK, s.vhostJSON(v, queueStats(s.clusterStats(p))))
}

// putVhost creates a vhost and, as RabbitMQ does, gives its creator full permissions in it.
func (s *Server) putVhost(w http.ResponseWriter, r *http.Request, p *principal) {
	v := pathValue(r, "vhost")
	res, ok := s.apply(w, fsm.AddVhost{Name: v})
	if !ok {
		return
	}
	if res.Created && !p.peer {
		if _, ok := s.apply(w, fsm.SetPermissions{User: p.name, Vhost: v, Configure: ".*", Write: ".*", Read: ".*"}); !ok {
			return
		}
	}
	created(w, !res.Created)
}

func (s *Server) deleteVhost(w http.ResponseWriter, r *http.Request, p *principal) {
	v := pathValue(r, "vhost")
	if !s.src.Node.FSM().VhostExists(v) {
		notFound(w)
		return
	}
	if _, ok := s.apply(w, fsm.DeleteVhost{Name: v}); ok {
		s.closeConnectionsWhere(p, func(c server.ConnInfo) bool { return c.Vhost == v }, "vhost '"+v+"' is down")
		w.WriteHeader(http.StatusNoContent)
	}
}

// ---- users

func userJSON(u fsm.UserInfo) map[string]any {
	tags := u.Tags
	if tags == nil {
		tags = []string{}
	}
	return map[string]any{"name": u.Name, "password_hash": u.PasswordHash, "hashing_algorithm": broker.HashingAlgorithm,
		"tags": tags, "limits": limitsJSON(u.Limits)}
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *principal) {
	var out []map[string]any
	for _, u := range s.src.Node.FSM().Users() {
		out = append(out, userJSON(u))
	}
	writeList(w, r, out)
}

func (s *Server) findUser(name string) (fsm.UserInfo, bool) {
	hash, tags, ok := s.src.Node.FSM().User(name)
	limits, _ := s.src.Node.FSM().UserLimits(name)
	return fsm.UserInfo{Name: name, PasswordHash: hash, Tags: tags, Limits: limits}, ok
}

func (s *Server) showUser(w http.ResponseWriter, r *http.Request, _ *principal) {
	u, ok := s.findUser(pathValue(r, "user"))
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, userJSON(u))
}

// parseTags reads tags as RabbitMQ accepts them: a list, or one string separated by commas.
func parseTags(v any) ([]string, bool) {
	out := []string{}
	switch x := v.(type) {
	case nil:
	case string:
		for _, t := range strings.Split(x, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	case []any:
		for _, e := range x {
			t, ok := e.(string)
			if !ok {
				return nil, false
			}
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	default:
		return nil, false
	}
	slices.Sort(out)
	return slices.Compact(out), true
}

func (s *Server) putUser(w http.ResponseWriter, r *http.Request, _ *principal) {
	name := pathValue(r, "user")
	var body struct {
		Password         *string `json:"password"`
		PasswordHash     *string `json:"password_hash"`
		HashingAlgorithm string  `json:"hashing_algorithm"`
		Tags             any     `json:"tags"`
	}
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	tags, ok := parseTags(body.Tags)
	if !ok {
		badRequest(w, "tags must be a comma-separated string or a list of strings")
		return
	}
	old, existed := s.findUser(name)
	cmd, reason := userCommand(name, body.Password, body.PasswordHash, body.HashingAlgorithm, tags)
	if reason != "" {
		badRequest(w, reason)
		return
	}
	if existed && body.Password == nil && body.PasswordHash == nil {
		cmd.PasswordHash = old.PasswordHash // a tags-only update keeps the password
	}
	if _, ok := s.apply(w, cmd); ok {
		created(w, existed)
	}
}

// userCommand builds the PutUser for a password (hashed here) or a RabbitMQ password hash;
// reason is non-empty for input RabbitMQ would refuse too.
func userCommand(name string, password, hash *string, algorithm string, tags []string) (fsm.PutUser, string) {
	cmd := fsm.PutUser{Name: name, Tags: tags}
	switch {
	case password != nil:
		cmd.PasswordHash = broker.HashPassword(*password)
	case hash != nil:
		if algorithm != "" && algorithm != broker.HashingAlgorithm {
			return cmd, "hashing_algorithm " + algorithm + " is not supported (Warren verifies " + broker.HashingAlgorithm + ")"
		}
		if !broker.ValidPasswordHash(*hash) {
			return cmd, "password_hash is not a base64 " + broker.HashingAlgorithm + " hash"
		}
		cmd.PasswordHash = *hash
	}
	if name == "" {
		return cmd, "user name must not be empty"
	}
	return cmd, ""
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, p *principal) {
	name := pathValue(r, "user")
	if _, ok := s.findUser(name); !ok {
		notFound(w)
		return
	}
	if _, ok := s.apply(w, fsm.DeleteUser{Name: name}); ok {
		s.closeConnectionsWhere(p, func(c server.ConnInfo) bool { return c.User == name }, "user '"+name+"' is deleted")
		w.WriteHeader(http.StatusNoContent)
	}
}

// ---- permissions

func permJSON(e fsm.PermissionEntry) map[string]any {
	return map[string]any{"user": e.User, "vhost": e.Vhost, "configure": e.Configure, "write": e.Write, "read": e.Read}
}

func (s *Server) permissionList(w http.ResponseWriter, r *http.Request, keep func(fsm.PermissionEntry) bool) {
	var out []map[string]any
	for _, e := range s.src.Node.FSM().AllPermissions() {
		if keep(e) {
			out = append(out, permJSON(e))
		}
	}
	writeList(w, r, out)
}

func (s *Server) listPermissions(w http.ResponseWriter, r *http.Request, _ *principal) {
	s.permissionList(w, r, func(fsm.PermissionEntry) bool { return true })
}

func (s *Server) vhostPermissions(w http.ResponseWriter, r *http.Request, _ *principal) {
	v := pathValue(r, "vhost")
	if !s.src.Node.FSM().VhostExists(v) {
		notFound(w)
		return
	}
	s.permissionList(w, r, func(e fsm.PermissionEntry) bool { return e.Vhost == v })
}

func (s *Server) userPermissions(w http.ResponseWriter, r *http.Request, _ *principal) {
	u := pathValue(r, "user")
	if _, ok := s.findUser(u); !ok {
		notFound(w)
		return
	}
	s.permissionList(w, r, func(e fsm.PermissionEntry) bool { return e.User == u })
}

func (s *Server) showPermission(w http.ResponseWriter, r *http.Request, _ *principal) {
	v, u := pathValue(r, "vhost"), pathValue(r, "user")
	perm, ok := s.src.Node.FSM().Permissions(u, v)
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, permJSON(fsm.PermissionEntry{User: u, Vhost: v, Permissions: perm}))
}

func (s *Server) putPermission(w http.ResponseWriter, r *http.Request, _ *principal) {
	v, u := pathValue(r, "vhost"), pathValue(r, "user")
	var body struct{ Configure, Write, Read *string }
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	if body.Configure == nil || body.Write == nil || body.Read == nil {
		badRequest(w, "[{key_missing,configure}] configure, write and read are all needed")
		return
	}
	for _, re := range []string{*body.Configure, *body.Write, *body.Read} {
		if _, err := regexp.Compile(re); err != nil {
			badRequest(w, "invalid regular expression '"+re+"': "+err.Error())
			return
		}
	}
	if !s.src.Node.FSM().VhostExists(v) {
		badRequest(w, "vhost_not_found")
		return
	}
	if _, ok := s.findUser(u); !ok {
		badRequest(w, "user_not_found")
		return
	}
	_, existed := s.src.Node.FSM().Permissions(u, v)
	if _, ok := s.apply(w, fsm.SetPermissions{User: u, Vhost: v, Configure: *body.Configure, Write: *body.Write, Read: *body.Read}); ok {
		created(w, existed)
	}
}

func (s *Server) deletePermission(w http.ResponseWriter, r *http.Request, _ *principal) {
	v, u := pathValue(r, "vhost"), pathValue(r, "user")
	if _, ok := s.src.Node.FSM().Permissions(u, v); !ok {
		notFound(w)
		return
	}
	if _, ok := s.apply(w, fsm.ClearPermissions{User: u, Vhost: v}); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}
