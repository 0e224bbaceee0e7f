package exchange

import "strings"

// topic routes with a trie over the dot-separated words of binding keys,
// where "*" matches exactly one word and "#" zero or more. A routing key
// "" has zero words; "a..b" has three, the middle one empty (as in RabbitMQ).
// Matching walks the trie without splitting the key, so it does not allocate.
type topic struct {
	reg  registry
	root *topicNode
}

type topicNode struct {
	children map[string]*topicNode
	star     *topicNode // child for "*"
	hash     *topicNode // child for "#"
	dests    refDests
}

func (n *topicNode) empty() bool {
	return len(n.children) == 0 && n.star == nil && n.hash == nil && len(n.dests.dests) == 0
}

func newTopic() *topic { return &topic{reg: newRegistry(), root: &topicNode{}} }

// endOfKey marks a word cursor past the last word.
const endOfKey = -1

// firstWord returns the cursor of the first word of key: the empty key has
// no words at all.
func firstWord(key string) int {
	if key == "" {
		return endOfKey
	}
	return 0
}

// nextWord returns the word starting at pos and the cursor of the next one.
func nextWord(key string, pos int) (string, int) {
	if i := strings.IndexByte(key[pos:], '.'); i >= 0 {
		return key[pos : pos+i], pos + i + 1
	}
	return key[pos:], endOfKey
}

// patternWords splits a binding key into trie words, collapsing runs of "#"
// because "#.#" matches exactly what "#" matches and repeated "#" nodes would
// make matching exponential in the number of words.
func patternWords(key string) []string {
	var words []string
	for pos := firstWord(key); pos != endOfKey; {
		var w string
		w, pos = nextWord(key, pos)
		if w == "#" && len(words) > 0 && words[len(words)-1] == "#" {
			continue
		}
		words = append(words, w)
	}
	return words
}

func (n *topicNode) child(word string, create bool) *topicNode {
	var slot **topicNode
	switch word {
	case "*":
		slot = &n.star
	case "#":
		slot = &n.hash
	default:
		c := n.children[word]
		if c == nil && create {
			c = &topicNode{}
			if n.children == nil {
				n.children = make(map[string]*topicNode)
			}
			n.children[word] = c
		}
		return c
	}
	if *slot == nil && create {
		*slot = &topicNode{}
	}
	return *slot
}

func (n *topicNode) dropChild(word string) {
	switch word {
	case "*":
		n.star = nil
	case "#":
		n.hash = nil
	default:
		delete(n.children, word)
		if len(n.children) == 0 {
			n.children = nil
		}
	}
}

func (m *topic) Add(b Binding) bool {
	if _, ok := m.reg.add(b); !ok {
		return false
	}
	n := m.root
	for _, w := range patternWords(b.Key) {
		n = n.child(w, true)
	}
	n.dests.inc(b.Dest)
	return true
}

func (m *topic) Remove(b Binding) bool {
	if _, _, ok := m.reg.remove(b); !ok {
		return false
	}
	words := patternWords(b.Key)
	// Remember the path so that nodes left empty can be pruned bottom-up.
	path := make([]*topicNode, 0, len(words)+1)
	n := m.root
	path = append(path, n)
	for _, w := range words {
		n = n.child(w, false)
		if n == nil {
			return true // unreachable while registry and trie agree
		}
		path = append(path, n)
	}
	n.dests.dec(b.Dest)
	for i := len(words); i > 0; i-- {
		if !path[i].empty() {
			break
		}
		path[i-1].dropChild(words[i-1])
	}
	return true
}

func (m *topic) Route(routingKey string, _ map[string]any, out []Dest) []Dest {
	start := len(out)
	out = m.root.match(routingKey, firstWord(routingKey), out)
	return DedupeTail(out, start)
}

// match appends the dests of every pattern under n that matches the words of
// key from cursor pos on.
func (n *topicNode) match(key string, pos int, out []Dest) []Dest {
	if n.hash != nil {
		// "#" swallows zero, one, ... or all remaining words.
		for p := pos; ; {
			out = n.hash.match(key, p, out)
			if p == endOfKey {
				break
			}
			_, p = nextWord(key, p)
		}
	}
	if pos == endOfKey {
		return append(out, n.dests.dests...)
	}
	word, next := nextWord(key, pos)
	if c := n.children[word]; c != nil {
		out = c.match(key, next, out)
	}
	if n.star != nil {
		out = n.star.match(key, next, out)
	}
	return out
}

func (m *topic) Len() int            { return m.reg.len() }
func (m *topic) Bindings() []Binding { return m.reg.sorted() }
