package wire

import "fmt"

// ProtocolError is a connection- or channel-level error with an AMQP reply code.
// The codec returns it for malformed input so the server can close with the
// right code (FrameError for framing, SyntaxError for arguments,
// NotImplemented for unknown methods).
type ProtocolError struct {
	Code uint16
	Text string
}

func (e *ProtocolError) Error() string {
	if name := ReplyCodeName(e.Code); name != "" {
		return fmt.Sprintf("%s - %s", name, e.Text)
	}
	return fmt.Sprintf("reply code %d - %s", e.Code, e.Text)
}

func syntaxErrorf(format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: SyntaxError, Text: fmt.Sprintf(format, args...)}
}

func frameErrorf(format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: FrameError, Text: fmt.Sprintf(format, args...)}
}
