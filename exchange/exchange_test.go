package exchange

import (
	"slices"
	"testing"
)

func q(name string) Dest { return Dest{Name: name} }
func x(name string) Dest { return Dest{Name: name, IsExchange: true} }

func mustMatcher(t testing.TB, kind string) Matcher {
	t.Helper()
	m, err := NewMatcher(kind)
	if err != nil {
		t.Fatalf("NewMatcher(%q): %v", kind, err)
	}
	return m
}

func routeNames(m Matcher, key string, h map[string]any) []string {
	var names []string
	for _, d := range m.Route(key, h, nil) {
		names = append(names, d.Name)
	}
	slices.Sort(names)
	return names
}

func TestNewMatcherUnknownKind(t *testing.T) {
	if _, err := NewMatcher("x-consistent-hash"); err == nil {
		t.Fatal("expected an error for an unknown kind")
	}
	for _, k := range []string{"direct", "fanout", "topic", "headers"} {
		if !ValidKind(k) {
			t.Errorf("ValidKind(%q) = false", k)
		}
	}
}

func TestDirect(t *testing.T) {
	m := mustMatcher(t, KindDirect)
	if !m.Add(Binding{Dest: q("q1"), Key: "k"}) {
		t.Fatal("first add refused")
	}
	if m.Add(Binding{Dest: q("q1"), Key: "k"}) {
		t.Fatal("duplicate add accepted")
	}
	// Same dest and key with different args is another binding, but the
	// queue must still receive the message once.
	if !m.Add(Binding{Dest: q("q1"), Key: "k", Args: map[string]any{"a": int32(1)}}) {
		t.Fatal("add with args refused")
	}
	if m.Add(Binding{Dest: q("q1"), Key: "k", Args: map[string]any{"a": int64(1)}}) {
		t.Fatal("args equal up to integer width must be the same binding")
	}
	m.Add(Binding{Dest: q("q2"), Key: "k"})
	m.Add(Binding{Dest: x("x1"), Key: "other"})
	if got := routeNames(m, "k", nil); !slices.Equal(got, []string{"q1", "q2"}) {
		t.Fatalf("route k = %v", got)
	}
	if got := routeNames(m, "K", nil); len(got) != 0 {
		t.Fatalf("keys are case-sensitive, got %v", got)
	}
	if m.Len() != 4 {
		t.Fatalf("Len = %d, want 4", m.Len())
	}
	if !m.Remove(Binding{Dest: q("q1"), Key: "k"}) {
		t.Fatal("remove refused")
	}
	if got := routeNames(m, "k", nil); !slices.Equal(got, []string{"q1", "q2"}) {
		t.Fatalf("q1 still bound via args binding, got %v", got)
	}
	if !m.Remove(Binding{Dest: q("q1"), Key: "k", Args: map[string]any{"a": uint8(1)}}) {
		t.Fatal("remove with equivalent args refused")
	}
	if got := routeNames(m, "k", nil); !slices.Equal(got, []string{"q2"}) {
		t.Fatalf("route after removals = %v", got)
	}
	if m.Remove(Binding{Dest: q("q1"), Key: "k"}) {
		t.Fatal("removing a missing binding reported success")
	}
}

func TestFanout(t *testing.T) {
	m := mustMatcher(t, KindFanout)
	for i := range 40 { // past the size where refDests switches to an index
		m.Add(Binding{Dest: q(string(rune('A' + i))), Key: "ignored"})
	}
	m.Add(Binding{Dest: q("A"), Key: "other"})
	got := m.Route("anything", nil, nil)
	if len(got) != 40 {
		t.Fatalf("fanout routed to %d dests, want 40", len(got))
	}
	m.Remove(Binding{Dest: q("A"), Key: "ignored"})
	if got := m.Route("", nil, nil); len(got) != 40 {
		t.Fatalf("A still bound with key other: got %d dests", len(got))
	}
	m.Remove(Binding{Dest: q("A"), Key: "other"})
	got = m.Route("", nil, nil)
	if len(got) != 39 || slices.Contains(got, q("A")) {
		t.Fatalf("after removing A: %v", got)
	}
}

// topicKeys and topicCases were recorded from RabbitMQ 3.10: each pattern
// bound to its own queue, every key published once.
var topicKeys = []string{"", "a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "tom.hades", "tom.hades.jack", "hades.jack", "a.b.c", "b.a", "x.a", "a.b.b"}

var topicCases = []struct {
	pattern string
	matches []string
}{
	{"#", []string{"", "a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "tom.hades", "tom.hades.jack", "hades.jack", "a.b.c", "b.a", "x.a", "a.b.b"}},
	{"*", []string{"a", "b"}},
	{"", []string{""}},
	{"#.#", []string{"", "a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "tom.hades", "tom.hades.jack", "hades.jack", "a.b.c", "b.a", "x.a", "a.b.b"}},
	{"*.*", []string{"a.b", "a.", ".a", ".", "tom.hades", "hades.jack", "b.a", "x.a"}},
	{"a.#", []string{"a", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", "a.b.c", "a.b.b"}},
	{"a.*", []string{"a.b", "a."}},
	{"#.a", []string{"a", ".a", "b.a", "x.a"}},
	{"*.a", []string{".a", "b.a", "x.a"}},
	{"a.#.b", []string{"a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"}},
	{"a.*.b", []string{"a.x.b", "a..b", "a.b.b"}},
	{"a..b", []string{"a..b"}},
	{"*.hades.#", []string{"tom.hades", "tom.hades.jack"}},
	{"#.*", []string{"a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "tom.hades", "tom.hades.jack", "hades.jack", "a.b.c", "b.a", "x.a", "a.b.b"}},
	{"*.#", []string{"a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "tom.hades", "tom.hades.jack", "hades.jack", "a.b.c", "b.a", "x.a", "a.b.b"}},
	{"a", []string{"a"}},
	{"a.", []string{"a."}},
	{".a", []string{".a"}},
	{".", []string{"."}},
	{"a.#.#.b", []string{"a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"}},
	{"#.b.#", []string{"b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.c", "b.a", "a.b.b"}},
	{"a.*.#", []string{"a.b", "a.x.b", "a.x.y.b", "a..b", "a.", "a.b.c", "a.b.b"}},
	{"#.#.b", []string{"b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"}},
}

func TestTopicMatchesRabbitMQ(t *testing.T) {
	m := mustMatcher(t, KindTopic)
	for _, c := range topicCases {
		m.Add(Binding{Dest: q(c.pattern), Key: c.pattern})
	}
	for _, key := range topicKeys {
		got := routeNames(m, key, nil)
		var want []string
		for _, c := range topicCases {
			if slices.Contains(c.matches, key) {
				want = append(want, c.pattern)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("key %q: got %q, want %q", key, got, want)
		}
	}
}

func TestTopicDedupeAndRemoval(t *testing.T) {
	m := mustMatcher(t, KindTopic)
	for _, p := range []string{"#", "a.#", "*.b", "a.b", "#.#.b"} {
		m.Add(Binding{Dest: q("q"), Key: p})
	}
	m.Add(Binding{Dest: q("other"), Key: "z.*"})
	if got := m.Route("a.b", nil, nil); !slices.Equal(got, []Dest{q("q")}) {
		t.Fatalf("dest matched by five patterns must appear once, got %v", got)
	}
	// Prefilled out must be kept: dedupe applies to this call only.
	out := m.Route("a.b", nil, []Dest{q("q")})
	if len(out) != 2 {
		t.Fatalf("out prefix not preserved: %v", out)
	}
	for _, p := range []string{"#", "a.#", "*.b", "a.b"} {
		if !m.Remove(Binding{Dest: q("q"), Key: p}) {
			t.Fatalf("remove %q refused", p)
		}
	}
	if got := routeNames(m, "a.b", nil); !slices.Equal(got, []string{"q"}) {
		t.Fatalf("#.#.b must still match a.b: %v", got)
	}
	m.Remove(Binding{Dest: q("q"), Key: "#.#.b"})
	if got := routeNames(m, "a.b", nil); len(got) != 0 {
		t.Fatalf("all patterns removed, got %v", got)
	}
	tm := m.(*topic)
	if tm.root.hash != nil || tm.root.star != nil || len(tm.root.children) != 1 {
		t.Fatalf("trie not pruned: %+v", tm.root)
	}
}

func TestTopicManyHashesStayFast(t *testing.T) {
	m := mustMatcher(t, KindTopic)
	m.Add(Binding{Dest: q("q"), Key: "#.#.#.#.#.#.#.#.#.#.z"})
	key := "a"
	for range 200 {
		key += ".a"
	}
	if got := m.Route(key, nil, nil); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
	if got := m.Route(key+".z", nil, nil); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestHeadersMatchesRabbitMQ(t *testing.T) {
	// Bindings and messages recorded against RabbitMQ 3.10.
	bindings := map[string]map[string]any{
		"all_empty":   {},
		"any_empty":   {"x-match": "any"},
		"all_ab":      {"a": int32(1), "b": "x"},
		"any_ab":      {"x-match": "any", "a": int64(1), "b": "x"},
		"all_void":    {"a": nil},
		"all_x":       {"x-foo": int32(1)},
		"any_x":       {"x-match": "any", "x-foo": int32(1)},
		"allwx":       {"x-match": "all-with-x", "x-foo": int32(1)},
		"anywx":       {"x-match": "any-with-x", "x-foo": int32(1), "b": "y"},
		"all_bool":    {"t": true},
		"all_str_num": {"s": "1"},
	}
	msgs := map[string]map[string]any{
		"none":     nil,
		"empty":    {},
		"a1":       {"a": int8(1)},
		"a1bx":     {"a": uint16(1), "b": "x"},
		"a1bx_big": {"a": uint64(1), "b": "x", "c": int32(3)},
		"a2bx":     {"a": int32(2), "b": "x"},
		"anull":    {"a": nil},
		"astr":     {"a": "z"},
		"xfoo":     {"x-foo": int32(1)},
		"xfoo2":    {"x-foo": int32(2)},
		"by":       {"b": "y"},
		"t1":       {"t": true},
		"t_int":    {"t": int32(1)},
		"s_num":    {"s": int32(1)},
		"xmatch":   {"x-match": "all-with-x", "x-foo": int32(1)},
	}
	all := []string{"none", "empty", "a1", "a1bx", "a1bx_big", "a2bx", "anull", "astr", "xfoo", "xfoo2", "by", "t1", "t_int", "s_num", "xmatch"}
	want := map[string][]string{
		"all_empty":   all,
		"any_empty":   nil,
		"all_ab":      {"a1bx", "a1bx_big"},
		"any_ab":      {"a1", "a1bx", "a1bx_big", "a2bx"},
		"all_void":    {"a1", "a1bx", "a1bx_big", "a2bx", "anull", "astr"},
		"all_x":       all,
		"any_x":       nil,
		"allwx":       {"xfoo", "xmatch"},
		"anywx":       {"xfoo", "by", "xmatch"},
		"all_bool":    {"t1"},
		"all_str_num": nil,
	}
	m := mustMatcher(t, KindHeaders)
	for name, args := range bindings {
		if err := ValidateHeadersArgs(args); err != nil {
			t.Fatalf("binding %s: %v", name, err)
		}
		m.Add(Binding{Dest: q(name), Key: "ignored", Args: args})
	}
	for _, msg := range all {
		got := routeNames(m, "rk", msgs[msg])
		var exp []string
		for b, ms := range want {
			if slices.Contains(ms, msg) {
				exp = append(exp, b)
			}
		}
		slices.Sort(exp)
		if !slices.Equal(got, exp) {
			t.Errorf("message %s: got %v, want %v", msg, got, exp)
		}
	}
	if !m.Remove(Binding{Dest: q("all_empty"), Key: "ignored", Args: map[string]any{}}) {
		t.Fatal("remove refused")
	}
	if got := routeNames(m, "", map[string]any{"zzz": "1"}); len(got) != 1 || got[0] != "all_x" {
		t.Fatalf("after remove: %v", got)
	}
}

func TestHeadersDedupe(t *testing.T) {
	m := mustMatcher(t, KindHeaders)
	m.Add(Binding{Dest: q("q"), Args: map[string]any{"a": "1"}})
	m.Add(Binding{Dest: q("q"), Args: map[string]any{"b": "1"}})
	if got := m.Route("", map[string]any{"a": "1", "b": "1"}, nil); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestValidateHeadersArgs(t *testing.T) {
	for _, c := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"x-match": "foo"}, `Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x`},
		{map[string]any{"x-match": int32(5)}, `Invalid x-match field type signedint (value 5); expected longstr`},
	} {
		err := ValidateHeadersArgs(c.args)
		if err == nil || err.Error() != c.want {
			t.Errorf("args %v: got %v, want %q", c.args, err, c.want)
		}
	}
	if err := ValidateHeadersArgs(map[string]any{"x-match": "any-with-x"}); err != nil {
		t.Fatal(err)
	}
}

func TestValuesEqual(t *testing.T) {
	type table map[string]any // a named table type, like wire.Table
	cases := []struct {
		a, b any
		eq   bool
	}{
		{int8(-1), int64(-1), true},
		{uint64(1 << 63), int64(-1 << 63), false},
		{uint64(18446744073709551615), uint64(18446744073709551615), true},
		{int32(1), "1", false},
		{int32(1), true, false},
		{"a", []byte("a"), false},
		{nil, nil, true},
		{float32(0.5), float64(0.5), true},
		{[]any{int8(1), "x"}, []any{int64(1), "x"}, true},
		{table{"n": int16(2)}, map[string]any{"n": uint32(2)}, true},
		{map[string]any{"n": 2}, map[string]any{"n": 3}, false},
	}
	for _, c := range cases {
		if got := ValuesEqual(c.a, c.b); got != c.eq {
			t.Errorf("ValuesEqual(%#v, %#v) = %v", c.a, c.b, got)
		}
		ca := CanonicalArgs(map[string]any{"k": c.a})
		cb := CanonicalArgs(map[string]any{"k": c.b})
		if (ca == cb) != c.eq {
			t.Errorf("CanonicalArgs disagree with ValuesEqual for %#v, %#v: %q %q", c.a, c.b, ca, cb)
		}
	}
	if v, ok := AsInt(uint64(1 << 63)); !ok || v != 1<<63-1 {
		t.Errorf("AsInt saturation: %d %v", v, ok)
	}
	if v, ok := AsInt(int8(-128)); !ok || v != -128 {
		t.Errorf("AsInt(int8(-128)) = %d %v", v, ok)
	}
}

func TestBindingsDeterministic(t *testing.T) {
	for _, kind := range []string{KindDirect, KindFanout, KindTopic, KindHeaders} {
		a, b := mustMatcher(t, kind), mustMatcher(t, kind)
		bs := []Binding{
			{Dest: x("e"), Key: "k"},
			{Dest: q("z"), Key: "a"},
			{Dest: q("a"), Key: "b", Args: map[string]any{"h": "1"}},
			{Dest: q("a"), Key: "b"},
		}
		for _, bd := range bs {
			a.Add(bd)
		}
		for i := len(bs) - 1; i >= 0; i-- {
			b.Add(bs[i])
		}
		la, lb := a.Bindings(), b.Bindings()
		if len(la) != 4 || len(lb) != 4 {
			t.Fatalf("%s: lens %d %d", kind, len(la), len(lb))
		}
		for i := range la {
			if la[i].Dest != lb[i].Dest || la[i].Key != lb[i].Key || !ArgsEqual(la[i].Args, lb[i].Args) {
				t.Fatalf("%s: order differs at %d: %v vs %v", kind, i, la[i], lb[i])
			}
		}
		if la[0].Dest != q("a") || la[3].Dest != x("e") {
			t.Fatalf("%s: unexpected order %v", kind, la)
		}
	}
}

func TestDedupeTailLong(t *testing.T) {
	var out []Dest
	for i := range 100 {
		out = append(out, q(string(rune('a'+i%30))))
	}
	out = DedupeTail(append([]Dest{q("prefix")}, out...), 1)
	if len(out) != 31 || out[0] != q("prefix") {
		t.Fatalf("got %d dests: %v", len(out), out)
	}
}
