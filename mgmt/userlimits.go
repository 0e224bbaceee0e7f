package mgmt

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"github.com/warrenmq/warren/fsm"
)

// RabbitMQ 3.10's user-limits API (routed by limitsFirst): GET /api/user-limits[/{user}] lists
// [{"user": u, "value": {"max-connections": N, ...}}] for users that have limits; PUT
// /api/user-limits/{user}/{name} with {"value": N} sets one (a negative N removes it) and
// DELETE removes it. The limits hold across the cluster (server/userlimits.go).

func (s *Server) userLimits(w http.ResponseWriter, r *http.Request) {
	f := s.src.Node.FSM()
	out := []map[string]any{}
	if name := r.PathValue("user"); name != "" {
		l, ok := f.UserLimits(name)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "Object Not Found", "reason": "Not Found"})
			return
		}
		if len(l) > 0 {
			out = append(out, map[string]any{"user": name, "value": l})
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	for _, u := range f.Users() { // sorted by name
		if len(u.Limits) > 0 {
			out = append(out, map[string]any{"user": u.Name, "value": u.Limits})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) changeUserLimit(w http.ResponseWriter, user, name string, value *int) {
	limits, ok := s.src.Node.FSM().UserLimits(user)
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "bad_request", "reason": []string{"no_such_user", user}})
		return
	}
	s.applyLimits(w, fsm.SetUserLimits{User: user, Limits: withLimit(limits, name, value)})
}

func (s *Server) putUserLimit(w http.ResponseWriter, r *http.Request) {
	if v, ok := limitValue(w, r); ok {
		s.changeUserLimit(w, r.PathValue("user"), r.PathValue("name"), v)
	}
}

func (s *Server) deleteUserLimit(w http.ResponseWriter, r *http.Request) {
	s.changeUserLimit(w, r.PathValue("user"), r.PathValue("name"), nil)
}

// limitsJSON is a user's "limits" field in /api/users: {} without limits, as RabbitMQ 3.10.
func limitsJSON(l map[string]int) map[string]int {
	if l == nil {
		return map[string]int{}
	}
	return l
}

// defLimits is a user's "limits" in exported definitions.
func defLimits(l map[string]int) map[string]any {
	out := map[string]any{}
	for k, v := range l {
		out[k] = v
	}
	return out
}

// importedUserLimits turns a definitions user's "limits" into the command that sets them.
func importedUserLimits(u DefUser) (fsm.Command, error) {
	limits := map[string]int{}
	for k, v := range u.Limits {
		num, ok := v.(json.Number) // decodeBody uses UseNumber
		n, err := num.Int64()
		if !ok || err != nil || n > math.MaxInt32 || n < math.MinInt32 {
			return nil, fmt.Errorf("%w: user %q: limit %q must be an integer", errBadDefinition, u.Name, k)
		}
		limits[k] = int(n)
	}
	return fsm.SetUserLimits{User: u.Name, Limits: limits}, nil
}
