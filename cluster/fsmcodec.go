package cluster

import (
	"encoding/json"
	"fmt"

	"github.com/warrenmq/warren/fsm"
)

// ResultCodec carries an FSM's Apply result from the leader back to the follower that forwarded
// the command, so the follower's caller sees exactly what a caller on the leader would.
type ResultCodec interface {
	Encode(result any) ([]byte, error)
	Decode(data []byte) (any, error)
}

// FSMResultCodec encodes Warren's fsm.Result as JSON; Decode yields an fsm.Result value, the
// same type the leader's raft future returns.
type FSMResultCodec struct{}

// Encode accepts fsm.Result, *fsm.Result or nil.
func (FSMResultCodec) Encode(result any) ([]byte, error) {
	switch r := result.(type) {
	case nil:
		return []byte("null"), nil
	case fsm.Result:
		return json.Marshal(r)
	case *fsm.Result:
		if r == nil {
			return []byte("null"), nil
		}
		return json.Marshal(*r)
	}
	return nil, fmt.Errorf("fsm result codec: cannot encode %T", result)
}

// Decode returns an fsm.Result, or nil for an encoded nil.
func (FSMResultCodec) Decode(data []byte) (any, error) {
	if string(data) == "null" {
		return nil, nil
	}
	var r fsm.Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("fsm result codec: %w", err)
	}
	return r, nil
}
