package rpc

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Keys of oslo.messaging's message envelope and inner message. They are part
// of the wire contract with Python services and must not change.
const (
	envelopeVersionKey = "oslo.version"
	envelopeMessageKey = "oslo.message"
	envelopeVersion    = "2.0"

	keyMsgID       = "_msg_id"
	keyReplyQueue  = "_reply_q"
	keyTimeout     = "_timeout"
	keyUniqueID    = "_unique_id"
	contextPrefix  = "_context_"
	jsonContent    = "application/json"
	utf8Encoding   = "utf-8"
	persistentMode = 2

	// transientQueueTTL mirrors oslo's rabbit_transient_queues_ttl default
	// (1800 s): reply and fanout queues vanish after half an hour unused.
	transientQueueTTL = int32(1800 * 1000)

	// duplicateWindow mirrors oslo's _MsgIdCache size: only the most recent
	// unique ids are remembered, which covers redeliveries after a lost ack.
	duplicateWindow = 16
)

// newHexID returns 32 random hex digits, the shape of Python's uuid4().hex
// that oslo uses for msg ids, unique ids and queue suffixes.
func newHexID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	// Set the version/variant bits so the value is a valid UUID4.
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return hex.EncodeToString(b[:])
}

// newUUID returns a dashed UUID4 string as Python's str(uuid.uuid4()),
// the format of a notification's message_id.
func newUUID() string {
	h := newHexID()
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// envelope is the outer JSON object of every RPC message and messagingv2
// notification: the real message travels as a JSON string inside it.
type envelope struct {
	Version string `json:"oslo.version"`
	Message string `json:"oslo.message"`
}

// encodeEnvelope serialises an inner message into oslo's 2.0 envelope.
func encodeEnvelope(inner map[string]any) ([]byte, error) {
	innerJSON, err := json.Marshal(inner)
	if err != nil {
		return nil, fmt.Errorf("encode oslo message: %w", err)
	}
	body, err := json.Marshal(envelope{Version: envelopeVersion, Message: string(innerJSON)})
	if err != nil {
		return nil, fmt.Errorf("encode oslo envelope: %w", err)
	}
	return body, nil
}

// decodeEnvelope returns the inner message of a body. Like oslo's
// deserialize_msg it accepts a bare JSON object without envelope (old
// senders and messagingv1 notifications), and rejects an envelope whose
// major version it does not understand.
func decodeEnvelope(body []byte) (map[string]json.RawMessage, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		return nil, fmt.Errorf("decode message body: %w", err)
	}
	rawVersion, hasVersion := outer[envelopeVersionKey]
	rawMessage, hasMessage := outer[envelopeMessageKey]
	if !hasVersion || !hasMessage {
		return outer, nil
	}
	var version, message string
	if err := json.Unmarshal(rawVersion, &version); err != nil {
		return nil, fmt.Errorf("decode envelope version: %w", err)
	}
	if !versionCompatible(envelopeVersion, version) {
		return nil, fmt.Errorf("unsupported oslo envelope version %q", version)
	}
	if err := json.Unmarshal(rawMessage, &message); err != nil {
		return nil, fmt.Errorf("decode envelope message: %w", err)
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal([]byte(message), &inner); err != nil {
		return nil, fmt.Errorf("decode inner oslo message: %w", err)
	}
	return inner, nil
}

// stringField reads a JSON string field; absent, null or non-string values
// read as "" so a malformed peer cannot make us fail.
func stringField(m map[string]json.RawMessage, key string) string {
	raw, ok := m[key]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// isNull reports whether a field is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// splitContext removes the `_context_*` keys of an inner message and returns
// them as a map, the way oslo's unpack_context does.
func splitContext(m map[string]json.RawMessage) map[string]any {
	values := map[string]any{}
	for key, raw := range m {
		if !strings.HasPrefix(key, contextPrefix) {
			continue
		}
		var v any
		if json.Unmarshal(raw, &v) == nil {
			values[strings.TrimPrefix(key, contextPrefix)] = v
		}
		delete(m, key)
	}
	return values
}

// packContext adds context values to an inner message as `_context_<key>`.
func packContext(inner map[string]any, values map[string]any) {
	for k, v := range values {
		inner[contextPrefix+k] = v
	}
}

// versionCompatible implements oslo's version_is_compatible: the requested
// version is served by an implementation with the same major number and an
// equal or newer minor (and revision). An empty implemented version accepts
// anything; unparsable numbers are incompatible.
func versionCompatible(implemented, requested string) bool {
	if implemented == "" {
		return true
	}
	req, ok1 := parseVersion(requested)
	imp, ok2 := parseVersion(implemented)
	if !ok1 || !ok2 {
		return false
	}
	if req[0] != imp[0] {
		return false
	}
	if req[1] != imp[1] {
		return req[1] < imp[1]
	}
	return req[2] <= imp[2]
}

// parseVersion splits "X.Y[.Z]" into numbers.
func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// failure is oslo's serialised exception, carried as a JSON string in the
// "failure" field of a reply.
type failure struct {
	Class   string         `json:"class"`
	Module  string         `json:"module"`
	Message string         `json:"message"`
	TB      []string       `json:"tb"`
	Args    []any          `json:"args"`
	Kwargs  map[string]any `json:"kwargs"`
}

// pythonTimestamp formats t as Python's str(datetime.utcnow()), the format
// oslo notifiers put in "timestamp".
func pythonTimestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05.000000")
}

// recentIDs remembers the last duplicateWindow ids, like oslo's _MsgIdCache.
type recentIDs struct {
	mu   sync.Mutex
	ids  [duplicateWindow]string
	next int
}

// seen reports whether id is among the remembered ones.
func (r *recentIDs) seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seenLocked(id)
}

func (r *recentIDs) seenLocked(id string) bool {
	if id == "" {
		return false
	}
	for _, known := range r.ids {
		if known == id {
			return true
		}
	}
	return false
}

// add remembers id, evicting the oldest.
func (r *recentIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(id)
}

func (r *recentIDs) addLocked(id string) {
	if id == "" || r.seenLocked(id) {
		return
	}
	r.ids[r.next] = id
	r.next = (r.next + 1) % duplicateWindow
}

// checkAndAdd reports whether id was already seen and remembers it.
func (r *recentIDs) checkAndAdd(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seenLocked(id) {
		return true
	}
	r.addLocked(id)
	return false
}
