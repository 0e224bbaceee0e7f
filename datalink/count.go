package datalink

import "context"

// Counter is implemented by a Handler that answers Peer.Count: how many of something the
// owner node holds under key (the broker counts a user's connections and channels, so that
// per-user limits hold across the cluster). Count runs on the link's read loop: it must be
// quick and must not block.
type Counter interface {
	Count(from string, key string) (int, error)
}

// errNoCounter answers a count request when the Handler does not implement Counter.
var errNoCounter = &RemoteError{Text: "this node does not answer count requests"}

// Count asks the peer's Handler (a Counter) for its count under key.
func (p *Peer) Count(ctx context.Context, key string) (int, error) {
	return p.numberRequest(ctx, "count", key, flagCount)
}

func (sl *serverLink) count(h Handler, f *frame) {
	n, err := 0, error(errNoCounter)
	if c, ok := h.(Counter); ok {
		n, err = c.Count(sl.from, f.queue)
	}
	reply := frame{typ: frameGetReply, reqID: f.reqID, n: clampU32(n)}
	reply.errCode, reply.errText = toRemoteError(err)
	sl.sendControl(&reply)
}
