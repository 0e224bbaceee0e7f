package mgmt

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/warrenmq/warren/fsm"
)

// limitsFirst serves RabbitMQ's vhost-limits API ahead of the mux: the default vhost is "%2F"
// in these paths, and ServeMux cleans "/api/vhost-limits/%2F/x" into another path and
// answers 404, so the segments are split from the escaped path here.
func (s *Server) limitsFirst(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/api/vhost-limits")
		if !ok || rest != "" && rest[0] != '/' {
			next.ServeHTTP(w, r)
			return
		}
		var segs []string
		if rest = strings.Trim(rest, "/"); rest != "" {
			segs = strings.Split(rest, "/")
		}
		for i, seg := range segs {
			v, err := url.PathUnescape(seg)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "reason": err.Error()})
				return
			}
			segs[i] = v
		}
		if len(segs) > 0 {
			r.SetPathValue("vhost", segs[0])
		}
		if len(segs) > 1 {
			r.SetPathValue("name", segs[1])
		}
		switch {
		case r.Method == http.MethodGet && len(segs) <= 1:
			s.authed(levelMonitoring, plain(s.vhostLimits))(w, r)
		case r.Method == http.MethodPut && len(segs) == 2:
			s.authed(levelAdministrator, plain(s.putVhostLimit))(w, r)
		case r.Method == http.MethodDelete && len(segs) == 2:
			s.authed(levelAdministrator, plain(s.deleteVhostLimit))(w, r)
		default:
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed", "reason": r.Method + " " + r.URL.Path})
		}
	})
}

func (s *Server) vhostLimits(w http.ResponseWriter, r *http.Request) {
	f := s.src.Node.FSM()
	vhosts := f.Vhosts()
	if v := r.PathValue("vhost"); v != "" {
		if !f.VhostExists(v) {
			notFound(w)
			return
		}
		vhosts = []string{v}
	}
	out := []map[string]any{}
	sort.Strings(vhosts)
	for _, v := range vhosts {
		if l := f.VhostLimits(v); len(l) > 0 {
			out = append(out, map[string]any{"vhost": v, "value": l})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) changeVhostLimit(w http.ResponseWriter, vhost, name string, value *int) {
	f := s.src.Node.FSM()
	if !f.VhostExists(vhost) {
		notFound(w)
		return
	}
	limits := f.VhostLimits(vhost)
	if limits == nil {
		limits = map[string]int{}
	}
	if value == nil {
		delete(limits, name)
	} else {
		limits[name] = *value
	}
	if _, ok := s.apply(w, fsm.SetVhostLimits{Vhost: vhost, Limits: limits}); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}

// putVhostLimit sets one limit: body {"value": N} (a negative N removes it).
func (s *Server) putVhostLimit(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Value *int `json:"value"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil || body.Value == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "reason": `body must be {"value": <integer>}`})
		return
	}
	s.changeVhostLimit(w, r.PathValue("vhost"), r.PathValue("name"), body.Value)
}

func (s *Server) deleteVhostLimit(w http.ResponseWriter, r *http.Request) {
	s.changeVhostLimit(w, r.PathValue("vhost"), r.PathValue("name"), nil)
}

// mergeLimits adds the fields of a limits report (a struct with JSON tags) to a node entry.
func mergeLimits(entry map[string]any, limits any) {
	b, err := json.Marshal(limits)
	if err != nil {
		return
	}
	var m map[string]any
	if json.Unmarshal(b, &m) == nil {
		for k, v := range m {
			entry[k] = v
		}
	}
}

// plain adapts a handler that needs no principal (the access level was checked already).
func plain(fn func(http.ResponseWriter, *http.Request)) handler {
	return func(w http.ResponseWriter, r *http.Request, _ *principal) { fn(w, r) }
}
