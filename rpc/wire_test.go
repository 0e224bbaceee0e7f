package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// These tests need no broker.

func TestVersionCompatible(t *testing.T) {
	cases := []struct {
		implemented, requested string
		want                   bool
	}{
		{"1.0", "1.0", true},
		{"1.2", "1.1", true},
		{"1.2", "1.3", false},
		{"1.2", "2.0", false},
		{"2.0", "1.9", false},
		{"1.2.3", "1.2.3", true},
		{"1.2.3", "1.2.4", false},
		{"1.2", "1.2.1", false},
		{"1.3", "1.2.9", true},
		{"", "7.7", true},
		{"1.0", "", false},
		{"1.0", "x.y", false},
		{"1.0", "1", false},
	}
	for _, c := range cases {
		if got := versionCompatible(c.implemented, c.requested); got != c.want {
			t.Errorf("versionCompatible(%q, %q) = %v, want %v", c.implemented, c.requested, got, c.want)
		}
	}
}

func TestParseTransportURL(t *testing.T) {
	cases := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"amqp://guest:guest@127.0.0.1:5672/", []string{"amqp://guest:guest@127.0.0.1:5672/"}, false},
		{"amqp://u:p@h1:5672,u:p@h2:5673/vhost", []string{"amqp://u:p@h1:5672/vhost", "amqp://u:p@h2:5673/vhost"}, false},
		{"rabbit://u:p@h1,h2:5673/", []string{"amqp://u:p@h1/", "amqp://u:p@h2:5673/"}, false},
		{"amqp://h1:5672?ssl=0", []string{"amqp://h1:5672/"}, false},
		{"amqps://u:p@h1:5671/v", []string{"amqps://u:p@h1:5671/v"}, false},
		{"http://h1/", nil, true},
		{"h1:5672", nil, true},
		{"amqp:///vhost", nil, true},
		{"amqp://,/", nil, true},
	}
	for _, c := range cases {
		got, err := parseTransportURL(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("parseTransportURL(%q) error = %v, wantErr %v", c.in, err, c.wantErr)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("parseTransportURL(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	got := redactURL("amqp://u:secret@h1:5672,v:hidden@h2/vh")
	if strings.Contains(got, "secret") || strings.Contains(got, "hidden") || !strings.Contains(got, "u:xxxxx@h1:5672") {
		t.Fatalf("redactURL = %q", got)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	body, err := encodeEnvelope(map[string]any{"method": "add", "args": map[string]int{"a": 1}, "_context_user": "u"})
	if err != nil {
		t.Fatal(err)
	}
	// The inner message must be a JSON string, as oslo sends it.
	var outer map[string]any
	if err := json.Unmarshal(body, &outer); err != nil {
		t.Fatal(err)
	}
	if outer["oslo.version"] != "2.0" {
		t.Fatalf("oslo.version = %v", outer["oslo.version"])
	}
	if _, isString := outer["oslo.message"].(string); !isString {
		t.Fatalf("oslo.message is %T, want a JSON string", outer["oslo.message"])
	}
	inner, err := decodeEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	if stringField(inner, "method") != "add" || string(inner["args"]) != `{"a":1}` {
		t.Fatalf("decoded %v", inner)
	}
	ctx := splitContext(inner)
	if ctx["user"] != "u" {
		t.Fatalf("context = %v", ctx)
	}
	if _, still := inner["_context_user"]; still {
		t.Fatal("splitContext left the _context_ key in the message")
	}
}

func TestDecodeEnvelopeVariants(t *testing.T) {
	// A bare object (no envelope) is accepted, as oslo does for old peers.
	inner, err := decodeEnvelope([]byte(`{"method":"m"}`))
	if err != nil || stringField(inner, "method") != "m" {
		t.Fatalf("bare object: %v, %v", inner, err)
	}
	for _, bad := range []string{
		`not json`,
		`[1,2]`,
		`{"oslo.version":"3.0","oslo.message":"{}"}`,
		`{"oslo.version":"2.0","oslo.message":"not json"}`,
		`{"oslo.version":2,"oslo.message":"{}"}`,
		`{"oslo.version":"2.0","oslo.message":5}`,
	} {
		if _, err := decodeEnvelope([]byte(bad)); err == nil {
			t.Errorf("decodeEnvelope(%s) succeeded, want error", bad)
		}
	}
	// A newer minor envelope version is still readable.
	if _, err := decodeEnvelope([]byte(`{"oslo.version":"2.0","oslo.message":"{\"a\":1}"}`)); err != nil {
		t.Fatalf("2.0 envelope: %v", err)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(`{"oslo.version":"2.0","oslo.message":"{\"method\":\"x\",\"_context_a\":1}"}`))
	f.Add([]byte(`{"result":null,"failure":"{\"class\":\"E\"}","ending":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		inner, err := decodeEnvelope(body)
		if err != nil {
			return
		}
		// Whatever decoded must be safe to read as a request or reply.
		_ = splitContext(inner)
		_ = stringField(inner, "method")
		if raw, ok := inner["failure"]; ok && !isNull(raw) {
			_ = decodeFailure(raw)
		}
	})
}

func TestFailureEncoding(t *testing.T) {
	encoded := encodeFailure(&RemoteError{Class: "ValueError", Module: "builtins", Message: "bad"})
	var f failure
	if err := json.Unmarshal([]byte(encoded), &f); err != nil {
		t.Fatal(err)
	}
	if f.Class != "ValueError" || f.Module != "builtins" || f.Message != "bad" || len(f.Args) != 1 || f.Kwargs == nil || f.TB == nil {
		t.Fatalf("failure = %+v", f)
	}
	// A failure travels as a JSON string inside the reply.
	raw, _ := json.Marshal(encoded)
	got := decodeFailure(raw)
	if got.Class != "ValueError" || got.Module != "builtins" || got.Message != "bad" {
		t.Fatalf("decodeFailure = %+v", got)
	}
	plain := decodeFailure(json.RawMessage(`"not json at all"`))
	if plain.Message != "not json at all" {
		t.Fatalf("decodeFailure of garbage = %+v", plain)
	}
	// A plain Go error is named after its type.
	var goErr failure
	_ = json.Unmarshal([]byte(encodeFailure(errors.New("oops"))), &goErr)
	if goErr.Class != "errorString" || goErr.Module != "errors" || goErr.Message != "oops" {
		t.Fatalf("go error failure = %+v", goErr)
	}
	if !strings.Contains((&RemoteError{Class: "C", Module: "m", Message: "x"}).Error(), "m.C: x") {
		t.Fatal("RemoteError.Error lacks module.class: message")
	}
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"Add":           "add",
		"GetInstance":   "get_instance",
		"GetHTTPStatus": "get_http_status",
		"Reboot2Fast":   "reboot2_fast",
		"ID":            "id",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

type reflectEndpoint struct{}

func (reflectEndpoint) Sum(_ context.Context, args struct{ Values []int }) (int, error) {
	total := 0
	for _, v := range args.Values {
		total += v
	}
	return total, nil
}

func (reflectEndpoint) Ping(context.Context, struct{}) error { return nil }

// Ignored: wrong shapes.
func (reflectEndpoint) NotRPC(int) int { return 0 }

func TestNewEndpoint(t *testing.T) {
	ep, err := NewEndpoint("ns", "1.1", reflectEndpoint{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Methods) != 2 || ep.Methods["sum"] == nil || ep.Methods["ping"] == nil {
		t.Fatalf("methods = %v", ep.Methods)
	}
	got, err := ep.Methods["sum"](context.Background(), json.RawMessage(`{"Values":[1,2,3]}`))
	if err != nil || got != 6 {
		t.Fatalf("sum = %v, %v", got, err)
	}
	_, err = ep.Methods["sum"](context.Background(), json.RawMessage(`{"Values":"nope"}`))
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Class != "TypeError" {
		t.Fatalf("bad args: err = %v, want TypeError", err)
	}
	if _, err := NewEndpoint("", "", struct{}{}); err == nil {
		t.Fatal("endpoint without methods accepted")
	}
	if _, err := NewEndpoint("", "", nil); err == nil {
		t.Fatal("nil receiver accepted")
	}
}

func TestRecentIDs(t *testing.T) {
	var r recentIDs
	if r.checkAndAdd("a") {
		t.Fatal("first a reported as seen")
	}
	if !r.checkAndAdd("a") {
		t.Fatal("second a not reported as seen")
	}
	for i := 0; i < duplicateWindow; i++ {
		r.add(fmt.Sprint(i))
	}
	if r.seen("a") {
		t.Fatal("a should have been evicted after the window")
	}
	if r.checkAndAdd("") || r.checkAndAdd("") {
		t.Fatal("empty id must never count as a duplicate")
	}
}

func TestEncodeArgs(t *testing.T) {
	for _, ok := range []any{nil, map[string]int{"a": 1}, struct{ A int }{1}} {
		if _, err := encodeArgs(ok); err != nil {
			t.Errorf("encodeArgs(%v): %v", ok, err)
		}
	}
	for _, bad := range []any{1, "s", []int{1}, func() {}} {
		if _, err := encodeArgs(bad); err == nil {
			t.Errorf("encodeArgs(%v) accepted", bad)
		}
	}
}

func TestIDs(t *testing.T) {
	if id := newHexID(); len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("newHexID = %q", id)
	}
	if u := newUUID(); len(u) != 36 || strings.Count(u, "-") != 4 || u[14] != '4' {
		t.Fatalf("newUUID = %q", u)
	}
}
