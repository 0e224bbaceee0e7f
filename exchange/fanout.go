package exchange

// fanout routes every message to every bound destination, ignoring keys.
type fanout struct {
	reg   registry
	dests refDests
}

func newFanout() *fanout { return &fanout{reg: newRegistry()} }

func (m *fanout) Add(b Binding) bool {
	if _, ok := m.reg.add(b); !ok {
		return false
	}
	m.dests.inc(b.Dest)
	return true
}

func (m *fanout) Remove(b Binding) bool {
	if _, _, ok := m.reg.remove(b); !ok {
		return false
	}
	m.dests.dec(b.Dest)
	return true
}

func (m *fanout) Route(_ string, _ map[string]any, out []Dest) []Dest {
	return append(out, m.dests.dests...)
}

func (m *fanout) Len() int            { return m.reg.len() }
func (m *fanout) Bindings() []Binding { return m.reg.sorted() }
