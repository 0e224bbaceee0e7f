package exchange

// direct routes on exact equality of routing key and binding key: one hash
// lookup per message.
type direct struct {
	reg   registry
	byKey map[string]*refDests
}

func newDirect() *direct {
	return &direct{reg: newRegistry(), byKey: make(map[string]*refDests)}
}

func (m *direct) Add(b Binding) bool {
	if _, ok := m.reg.add(b); !ok {
		return false
	}
	rd := m.byKey[b.Key]
	if rd == nil {
		rd = &refDests{}
		m.byKey[b.Key] = rd
	}
	rd.inc(b.Dest)
	return true
}

func (m *direct) Remove(b Binding) bool {
	if _, _, ok := m.reg.remove(b); !ok {
		return false
	}
	if rd := m.byKey[b.Key]; rd != nil {
		rd.dec(b.Dest)
		if len(rd.dests) == 0 {
			delete(m.byKey, b.Key)
		}
	}
	return true
}

func (m *direct) Route(routingKey string, _ map[string]any, out []Dest) []Dest {
	if rd := m.byKey[routingKey]; rd != nil {
		out = append(out, rd.dests...)
	}
	return out
}

func (m *direct) Len() int            { return m.reg.len() }
func (m *direct) Bindings() []Binding { return m.reg.sorted() }
