package mgmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/exchange"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/wire"
)

// Definitions is RabbitMQ's definitions file (GET/POST /api/definitions, rabbitmqadmin
// export/import). Warren has no policies or runtime parameters: they export empty, and an
// import that carries some answers which were left out.
type Definitions struct {
	RabbitVersion    string           `json:"rabbit_version,omitempty"`
	RabbitMQVersion  string           `json:"rabbitmq_version,omitempty"`
	ProductName      string           `json:"product_name,omitempty"`
	ProductVersion   string           `json:"product_version,omitempty"`
	Users            []DefUser        `json:"users,omitempty"`
	Vhosts           []DefVhost       `json:"vhosts,omitempty"`
	Permissions      []DefPermission  `json:"permissions,omitempty"`
	TopicPermissions []map[string]any `json:"topic_permissions,omitempty"`
	Parameters       []map[string]any `json:"parameters"`
	GlobalParameters []map[string]any `json:"global_parameters,omitempty"`
	Policies         []map[string]any `json:"policies"`
	Queues           []DefQueue       `json:"queues"`
	Exchanges        []DefExchange    `json:"exchanges"`
	Bindings         []DefBinding     `json:"bindings"`
}

type DefUser struct {
	Name             string         `json:"name"`
	PasswordHash     string         `json:"password_hash"`
	HashingAlgorithm string         `json:"hashing_algorithm"`
	Tags             any            `json:"tags"`
	Limits           map[string]any `json:"limits"`
}

type DefVhost struct {
	Name string `json:"name"`
}

type DefPermission struct {
	User      string `json:"user"`
	Vhost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

type DefQueue struct {
	Name       string         `json:"name"`
	Vhost      string         `json:"vhost,omitempty"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Arguments  map[string]any `json:"arguments"`
}

type DefExchange struct {
	Name       string         `json:"name"`
	Vhost      string         `json:"vhost,omitempty"`
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

type DefBinding struct {
	Source          string         `json:"source"`
	Vhost           string         `json:"vhost,omitempty"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
}

// export builds the definitions of the whole broker, or of one vhost (then without users,
// vhosts, permissions or vhost fields, as RabbitMQ).
func (s *Server) export(vhost string) Definitions {
	f := s.src.Node.FSM()
	d := Definitions{Parameters: []map[string]any{}, Policies: []map[string]any{},
		Queues: []DefQueue{}, Exchanges: []DefExchange{}, Bindings: []DefBinding{}}
	whole := vhost == ""
	if whole {
		d.RabbitVersion, d.RabbitMQVersion, d.ProductName, d.ProductVersion = APIVersion, APIVersion, "Warren", s.src.Version
		for _, u := range f.Users() {
			tags := u.Tags
			if tags == nil {
				tags = []string{}
			}
			d.Users = append(d.Users, DefUser{Name: u.Name, PasswordHash: u.PasswordHash, HashingAlgorithm: broker.HashingAlgorithm, Tags: tags, Limits: defLimits(u.Limits)})
		}
		for _, v := range f.Vhosts() {
			d.Vhosts = append(d.Vhosts, DefVhost{Name: v})
		}
		for _, p := range f.AllPermissions() {
			d.Permissions = append(d.Permissions, DefPermission{User: p.User, Vhost: p.Vhost, Configure: p.Configure, Write: p.Write, Read: p.Read})
		}
		d.TopicPermissions, d.GlobalParameters = []map[string]any{}, []map[string]any{}
	}
	exclusive := map[string]bool{}
	vh := func(v string) string {
		if whole {
			return v
		}
		return ""
	}
	for _, q := range f.Queues(vhost) {
		if q.Exclusive {
			exclusive[broker.StoreKey(q.Vhost, q.Name)] = true
			continue
		}
		d.Queues = append(d.Queues, DefQueue{Name: q.Name, Vhost: vh(q.Vhost), Durable: q.Durable, AutoDelete: q.AutoDelete, Arguments: decodeArgs(q.Args)})
	}
	for _, x := range f.Exchanges(vhost) {
		if x.Name == "" || strings.HasPrefix(x.Name, "amq.") {
			continue
		}
		d.Exchanges = append(d.Exchanges, DefExchange{Name: x.Name, Vhost: vh(x.Vhost), Type: x.Kind, Durable: x.Durable,
			AutoDelete: x.AutoDelete, Internal: x.Internal, Arguments: decodeArgs(x.Args)})
	}
	for _, b := range f.Bindings(vhost) {
		kind := "queue"
		if b.Dest.IsExchange {
			kind = "exchange"
		} else if exclusive[broker.StoreKey(b.Vhost, b.Dest.Name)] {
			continue
		}
		d.Bindings = append(d.Bindings, DefBinding{Source: b.Source, Vhost: vh(b.Vhost), Destination: b.Dest.Name,
			DestinationType: kind, RoutingKey: b.Key, Arguments: decodeArgs(b.Args)})
	}
	return d
}

func (s *Server) exportDefinitions(w http.ResponseWriter, r *http.Request, _ *principal) {
	vhost := pathValue(r, "vhost")
	if vhost != "" && !s.src.Node.FSM().VhostExists(vhost) {
		notFound(w)
		return
	}
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(r.URL.Query().Get("download"), `"`, "")+`"`)
	}
	writeJSON(w, http.StatusOK, s.export(vhost))
}

// importDefinitions applies a definitions file: vhosts, users, permissions, exchanges, queues,
// bindings in that order, each through Raft (so every node has it when the answer comes).
// Like RabbitMQ it stops at the first refusal, keeping what went before; 204 when all went in.
func (s *Server) importDefinitions(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost := pathValue(r, "vhost")
	if vhost != "" && !s.src.Node.FSM().VhostExists(vhost) {
		notFound(w)
		return
	}
	var d Definitions
	if err := decodeBody(r, &d); err != nil {
		badRequest(w, err.Error())
		return
	}
	pr := s.startProgress("import")
	pr.Total = len(d.Vhosts) + len(d.Users) + len(d.Permissions) + len(d.Exchanges) + len(d.Queues) + len(d.Bindings)
	err := s.importDefs(d, vhost, pr)
	s.finishProgress(pr, err)
	if err != nil {
		var fe *fsm.Error
		if errors.As(err, &fe) || errors.Is(err, errBadDefinition) {
			badRequest(w, err.Error())
			return
		}
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	if n := len(d.Policies) + len(d.Parameters) + len(d.GlobalParameters) + len(d.TopicPermissions); n > 0 {
		s.log.Warn("definitions import: policies, parameters and topic permissions are not supported by Warren; left out", "count", n)
	}
	w.WriteHeader(http.StatusNoContent)
}

var errBadDefinition = errors.New("bad definition")

func (s *Server) importDefs(d Definitions, onlyVhost string, pr *Progress) error {
	n := s.src.Node
	do := func(what string, c fsm.Command) error {
		if _, err := n.Apply(c); err != nil {
			return fmt.Errorf("import %s: %w", what, err)
		}
		pr.addItems(1)
		return nil
	}
	in := func(v string) string {
		if onlyVhost != "" {
			return onlyVhost
		}
		if v == "" {
			return fsm.DefaultVhost
		}
		return v
	}
	if onlyVhost == "" {
		for _, v := range d.Vhosts {
			if err := do("vhost "+v.Name, fsm.AddVhost{Name: v.Name}); err != nil {
				return err
			}
		}
		for _, u := range d.Users {
			tags, ok := parseTags(u.Tags)
			if !ok {
				return fmt.Errorf("%w: user %q: tags must be a string or a list", errBadDefinition, u.Name)
			}
			hash := u.PasswordHash
			cmd, reason := userCommand(u.Name, nil, &hash, u.HashingAlgorithm, tags)
			if reason != "" {
				return fmt.Errorf("%w: user %q: %s", errBadDefinition, u.Name, reason)
			}
			if err := do("user "+u.Name, cmd); err != nil {
				return err
			}
			if len(u.Limits) > 0 {
				limits, err := importedUserLimits(u)
				if err != nil {
					return err
				}
				if err := do("limits of user "+u.Name, limits); err != nil {
					return err
				}
			}
		}
		for _, pm := range d.Permissions {
			if err := do("permissions of "+pm.User+" in "+pm.Vhost, fsm.SetPermissions{User: pm.User, Vhost: pm.Vhost, Configure: pm.Configure, Write: pm.Write, Read: pm.Read}); err != nil {
				return err
			}
		}
	}
	for _, x := range d.Exchanges {
		if strings.HasPrefix(x.Name, "amq.") || x.Name == "" {
			continue // predeclared in every vhost
		}
		if _, err := exchange.NewMatcher(x.Type); err != nil {
			return fmt.Errorf("%w: exchange %q: unknown type %q", errBadDefinition, x.Name, x.Type)
		}
		args, err := encodeJSONArgs(x.Arguments)
		if err != nil {
			return fmt.Errorf("%w: exchange %q: %v", errBadDefinition, x.Name, err)
		}
		if err := do("exchange "+x.Name, fsm.DeclareExchange{Vhost: in(x.Vhost), Name: x.Name, Kind: x.Type, Durable: x.Durable,
			AutoDelete: x.AutoDelete, Internal: x.Internal, Args: args}); err != nil {
			return err
		}
	}
	for _, q := range d.Queues {
		args, err := encodeJSONArgs(q.Arguments)
		if err != nil {
			return fmt.Errorf("%w: queue %q: %v", errBadDefinition, q.Name, err)
		}
		vh := in(q.Vhost)
		if _, exists := n.FSM().Queue(vh, q.Name); !exists {
			pr.add(1, 0)
		}
		if err := do("queue "+q.Name, fsm.DeclareQueue{Vhost: vh, Name: q.Name, Durable: q.Durable, AutoDelete: q.AutoDelete,
			Args: args, Owner: n.BalancedOwner()}); err != nil {
			return err
		}
	}
	for _, b := range d.Bindings {
		args, err := encodeJSONArgs(b.Arguments)
		if err != nil {
			return fmt.Errorf("%w: binding %s→%s: %v", errBadDefinition, b.Source, b.Destination, err)
		}
		dest := exchange.Dest{Name: b.Destination, IsExchange: b.DestinationType == "exchange"}
		if err := do("binding "+b.Source+"→"+b.Destination, fsm.Bind{Vhost: in(b.Vhost), Source: b.Source, Dest: dest, Key: b.RoutingKey, Args: args}); err != nil {
			return err
		}
	}
	return nil
}

// encodeJSONArgs turns JSON arguments into the encoded table the FSM stores (keys sorted).
func encodeJSONArgs(m map[string]any) ([]byte, error) {
	for k, v := range m {
		if f, ok := v.(float64); ok { // not decoded with UseNumber
			m[k] = json.Number(fmt.Sprint(f))
		}
	}
	t, err := toTable(m)
	if err != nil || len(t) == 0 {
		return nil, err
	}
	return wire.AppendTable(nil, toWire(t).(wire.Table)), nil
}

func toWire(v any) any {
	switch x := v.(type) {
	case amqp.Table:
		out := wire.Table{}
		for k, e := range x {
			out[k] = toWire(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toWire(e)
		}
		return out
	}
	return v
}
