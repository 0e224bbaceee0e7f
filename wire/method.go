package wire

import (
	"encoding/binary"
	"fmt"
)

// Method is one AMQP method with its arguments. Every generated method struct
// implements it through a pointer receiver (*BasicPublish, *QueueDeclare, ...).
type Method interface {
	ClassID() uint16
	MethodID() uint16
	// Name is the spec's dotted name, such as "basic.publish".
	Name() string
	// HasContent reports whether a content header and body frames follow the method.
	HasContent() bool
	// Sync reports whether the spec marks the method synchronous (a request
	// expecting a reply, or the reply itself).
	Sync() bool
	// Append appends the encoded arguments only (no class or method id).
	Append(dst []byte) []byte
	// Decode replaces every field from the encoded arguments; short or
	// malformed input yields a *ProtocolError with code SyntaxError.
	Decode(args []byte) error
}

// SplitMethod splits a method frame payload into its class id, method id and
// encoded arguments without decoding them. It lets the server decode hot
// methods into structs it reuses instead of allocating one per frame.
func SplitMethod(payload []byte) (classID, methodID uint16, args []byte, err error) {
	if len(payload) < 4 {
		return 0, 0, nil, syntaxErrorf("method frame payload of %d bytes is shorter than its class and method ids", len(payload))
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), payload[4:], nil
}

// DecodeMethod parses a method frame payload (class-id, method-id, arguments).
// An unknown class or method yields *ProtocolError{NotImplemented}; malformed
// arguments yield *ProtocolError{SyntaxError}.
func DecodeMethod(payload []byte) (Method, error) {
	classID, methodID, args, err := SplitMethod(payload)
	if err != nil {
		return nil, err
	}
	m, ok := NewMethod(classID, methodID)
	if !ok {
		return nil, &ProtocolError{Code: NotImplemented, Text: unknownMethodText(classID, methodID)}
	}
	if err := m.Decode(args); err != nil {
		return nil, err
	}
	return m, nil
}

func unknownMethodText(classID, methodID uint16) string {
	return fmt.Sprintf("unknown method: class %d, method %d", classID, methodID)
}
