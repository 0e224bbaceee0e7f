package exchange

import (
	"fmt"
	"slices"
	"strings"
)

// headers routes on message header values. Each binding is checked in turn,
// so routing is linear in the number of bindings of the exchange (as in
// RabbitMQ); a binding's requirements are compiled once at Add.
type headers struct {
	reg      registry
	bindings []compiledHeaders
}

type matchMode uint8

const (
	matchAll matchMode = iota
	matchAny
	matchAllWithX
	matchAnyWithX
)

type headerRequirement struct {
	key   string
	value any
	// presenceOnly: a void binding value matches any value of that header.
	presenceOnly bool
}

type compiledHeaders struct {
	id   bindingID
	dest Dest
	mode matchMode
	reqs []headerRequirement
}

func newHeaders() *headers { return &headers{reg: newRegistry()} }

// ValidateHeadersArgs checks the x-match argument of a headers binding and
// returns RabbitMQ's refusal text (without the "PRECONDITION_FAILED - "
// prefix) when it is invalid.
func ValidateHeadersArgs(args map[string]any) error {
	_, err := parseMatchMode(args)
	return err
}

func parseMatchMode(args map[string]any) (matchMode, error) {
	v, ok := args["x-match"]
	if !ok {
		return matchAll, nil
	}
	s, isString := v.(string)
	if b, isBytes := v.([]byte); isBytes {
		s, isString = string(b), true
	}
	if !isString {
		return matchAll, fmt.Errorf("Invalid x-match field type %s (value %s); expected longstr", TypeName(v), FormatValue(v))
	}
	switch s {
	case "all":
		return matchAll, nil
	case "any":
		return matchAny, nil
	case "all-with-x":
		return matchAllWithX, nil
	case "any-with-x":
		return matchAnyWithX, nil
	}
	return matchAll, fmt.Errorf("Invalid x-match field value <<\"%s\">>; expected all, any, all-with-x, or any-with-x", s)
}

func compileHeaders(id bindingID, b Binding) compiledHeaders {
	// An invalid x-match was refused by the caller through ValidateHeadersArgs;
	// if one slips through, it behaves like the default ("all").
	mode, _ := parseMatchMode(b.Args)
	withX := mode == matchAllWithX || mode == matchAnyWithX
	c := compiledHeaders{id: id, dest: b.Dest, mode: mode}
	for k, v := range b.Args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		c.reqs = append(c.reqs, headerRequirement{key: k, value: v, presenceOnly: v == nil})
	}
	// Sorted so that evaluation order never depends on map iteration.
	slices.SortFunc(c.reqs, func(a, b headerRequirement) int { return strings.Compare(a.key, b.key) })
	return c
}

func (m *headers) Add(b Binding) bool {
	id, ok := m.reg.add(b)
	if !ok {
		return false
	}
	m.bindings = append(m.bindings, compileHeaders(id, b))
	return true
}

func (m *headers) Remove(b Binding) bool {
	_, id, ok := m.reg.remove(b)
	if !ok {
		return false
	}
	i := slices.IndexFunc(m.bindings, func(c compiledHeaders) bool { return c.id == id })
	if i >= 0 {
		m.bindings = slices.Delete(m.bindings, i, i+1)
	}
	return true
}

func (c *compiledHeaders) matches(h map[string]any) bool {
	all := c.mode == matchAll || c.mode == matchAllWithX
	for _, r := range c.reqs {
		v, present := h[r.key]
		ok := present && (r.presenceOnly || ValuesEqual(r.value, v))
		if all && !ok {
			return false
		}
		if !all && ok {
			return true
		}
	}
	// "all" over no requirements matches everything; "any" over none matches nothing.
	return all
}

func (m *headers) Route(_ string, h map[string]any, out []Dest) []Dest {
	start := len(out)
	for i := range m.bindings {
		if m.bindings[i].matches(h) {
			out = append(out, m.bindings[i].dest)
		}
	}
	return DedupeTail(out, start)
}

func (m *headers) Len() int            { return m.reg.len() }
func (m *headers) Bindings() []Binding { return m.reg.sorted() }
