package exchange

import (
	"strconv"
	"strings"
	"testing"
)

const benchBindings = 10_000

func BenchmarkDirectRoute10k(b *testing.B) {
	m := mustMatcher(b, KindDirect)
	for i := range benchBindings {
		m.Add(Binding{Dest: q("q" + strconv.Itoa(i)), Key: "key." + strconv.Itoa(i)})
	}
	out := make([]Dest, 0, 16)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out = m.Route("key.4242", nil, out[:0])
	}
	if len(out) != 1 {
		b.Fatalf("routed to %d", len(out))
	}
}

// 10k patterns in the shape oslo.messaging and typical apps use:
// "<service>.<host>.*", "<service>.#", "*.<host>.<event>".
func BenchmarkTopicRoute10k(b *testing.B) {
	m := mustMatcher(b, KindTopic)
	for i := range benchBindings {
		var key string
		switch i % 3 {
		case 0:
			key = "svc" + strconv.Itoa(i%500) + ".host" + strconv.Itoa(i) + ".*"
		case 1:
			key = "svc" + strconv.Itoa(i) + ".#"
		default:
			key = "*.host" + strconv.Itoa(i%700) + ".event" + strconv.Itoa(i)
		}
		m.Add(Binding{Dest: q("q" + strconv.Itoa(i)), Key: key})
	}
	out := make([]Dest, 0, 16)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out = m.Route("svc3.host3.event3", nil, out[:0])
	}
	if len(out) == 0 {
		b.Fatal("no match")
	}
}

// Headers routing is linear in the bindings of the exchange.
func BenchmarkHeadersRoute10k(b *testing.B) {
	m := mustMatcher(b, KindHeaders)
	for i := range benchBindings {
		m.Add(Binding{Dest: q("q" + strconv.Itoa(i)), Args: map[string]any{
			"x-match": "all", "format": "pdf", "id": int32(i),
		}})
	}
	h := map[string]any{"format": "pdf", "id": int64(777)}
	out := make([]Dest, 0, 16)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out = m.Route("", h, out[:0])
	}
	if len(out) != 1 {
		b.Fatalf("routed to %d", len(out))
	}
}

func BenchmarkFanout(b *testing.B) {
	m := mustMatcher(b, KindFanout)
	for i := range 100 {
		m.Add(Binding{Dest: q("q" + strconv.Itoa(i))})
	}
	out := make([]Dest, 0, 128)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out = m.Route("", nil, out[:0])
	}
	if len(out) != 100 {
		b.Fatalf("routed to %d", len(out))
	}
}

// naiveTopicMatch is a direct transcription of the topic rules over split
// words, used as the oracle for the trie.
func naiveTopicMatch(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if naiveTopicMatch(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && naiveTopicMatch(pattern[1:], key[1:])
	default:
		return len(key) > 0 && key[0] == pattern[0] && naiveTopicMatch(pattern[1:], key[1:])
	}
}

func splitWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

func FuzzTopicAgainstNaive(f *testing.F) {
	f.Add("a.#.b", "a.x.b", "*.*", "#.#")
	f.Add("#", "", "*", "a..b")
	f.Fuzz(func(t *testing.T, p1, key, p2, p3 string) {
		if len(key) > 64 || len(p1)+len(p2)+len(p3) > 96 {
			return
		}
		m := mustMatcher(t, KindTopic)
		patterns := []string{p1, p2, p3}
		for i, p := range patterns {
			m.Add(Binding{Dest: q(strconv.Itoa(i)), Key: p})
		}
		got := map[string]bool{}
		for _, d := range m.Route(key, nil, nil) {
			if got[d.Name] {
				t.Fatalf("dest %s routed twice", d.Name)
			}
			got[d.Name] = true
		}
		for i, p := range patterns {
			want := naiveTopicMatch(splitWords(p), splitWords(key))
			if got[strconv.Itoa(i)] != want {
				t.Fatalf("pattern %q key %q: trie %v naive %v", p, key, got[strconv.Itoa(i)], want)
			}
		}
	})
}
