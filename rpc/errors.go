package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// ErrTimeout is matched (errors.Is) by every error returned when a call got
// no reply in time. oslo.messaging raises MessagingTimeout in the same case.
var ErrTimeout = errors.New("rpc: timed out waiting for a reply")

// ErrClosed is returned by operations on a closed Transport.
var ErrClosed = errors.New("rpc: transport closed")

// TimeoutError says which call timed out and after how long.
type TimeoutError struct {
	Topic  string
	Method string
	MsgID  string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("rpc: timed out waiting for a reply to %s on topic %q (msg_id %s)", e.Method, e.Topic, e.MsgID)
}

// Is makes errors.Is(err, ErrTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// RemoteError is an exception raised by the remote endpoint, as oslo
// serialises it. A Go handler may return a *RemoteError to choose the class
// and module a Python caller sees (for example Class "ValueError", Module
// "builtins" makes Python re-raise a ValueError).
type RemoteError struct {
	Class     string
	Module    string
	Message   string
	Traceback []string
	Args      []any
	Kwargs    map[string]any
}

func (e *RemoteError) Error() string {
	if e.Module != "" {
		return fmt.Sprintf("remote error: %s.%s: %s", e.Module, e.Class, e.Message)
	}
	return fmt.Sprintf("remote error: %s: %s", e.Class, e.Message)
}

// Names of the errors oslo's dispatcher raises, reused by the Go server so a
// Python caller sees the same exception classes from a Go service.
const (
	dispatcherModule        = "oslo_messaging.rpc.dispatcher"
	classNoSuchMethod       = "NoSuchMethod"
	classUnsupportedVersion = "UnsupportedVersion"
)

// decodeFailure parses the "failure" field of a reply. oslo sends it as a
// JSON string holding a JSON object; a plain object is accepted too.
func decodeFailure(raw json.RawMessage) *RemoteError {
	var text string
	payload := []byte(raw)
	if json.Unmarshal(raw, &text) == nil {
		payload = []byte(text)
	}
	var f failure
	if err := json.Unmarshal(payload, &f); err != nil {
		return &RemoteError{Class: "RemoteError", Message: strings.TrimSpace(string(payload))}
	}
	return &RemoteError{Class: f.Class, Module: f.Module, Message: f.Message, Traceback: f.TB, Args: f.Args, Kwargs: f.Kwargs}
}

// encodeFailure turns a handler's error into oslo's failure JSON string.
func encodeFailure(err error) string {
	var remote *RemoteError
	f := failure{Kwargs: map[string]any{}}
	if errors.As(err, &remote) {
		f.Class, f.Module, f.Message, f.TB = remote.Class, remote.Module, remote.Message, remote.Traceback
		f.Args, f.Kwargs = remote.Args, remote.Kwargs
	} else {
		f.Class, f.Module = goErrorClass(err)
		f.Message = err.Error()
	}
	if f.Args == nil {
		f.Args = []any{f.Message}
	}
	if f.Kwargs == nil {
		f.Kwargs = map[string]any{}
	}
	if f.TB == nil {
		f.TB = []string{}
	}
	out, mErr := json.Marshal(f)
	if mErr != nil {
		// Args or kwargs held something JSON cannot encode; keep the message.
		out, _ = json.Marshal(failure{Class: f.Class, Module: f.Module, Message: f.Message, TB: f.TB, Args: []any{f.Message}, Kwargs: map[string]any{}})
	}
	return string(out)
}

// goErrorClass names a Go error the way oslo names an exception: its type
// name and package path. A module that is not importable in Python makes a
// Python caller raise oslo_messaging.RemoteError carrying these names.
func goErrorClass(err error) (class, module string) {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	class, module = t.Name(), t.PkgPath()
	if class == "" {
		class = "Error"
	}
	if module == "" {
		module = "go"
	}
	return class, module
}
