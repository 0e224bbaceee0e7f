package mgmt

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// metrics writes Prometheus text exposition, one sample per queue plus node totals.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	var b strings.Builder
	f := s.src.Node.FSM()
	qs := f.Queues("")
	sort.Slice(qs, func(i, j int) bool { return qs[i].Vhost+qs[i].Name < qs[j].Vhost+qs[j].Name })
	fmt.Fprintf(&b, "# TYPE warren_connections gauge\nwarren_connections %d\n", s.src.AMQP.ConnectionCount())
	fmt.Fprintf(&b, "# TYPE warren_queues gauge\nwarren_queues %d\n", len(qs))
	fmt.Fprintf(&b, "# TYPE warren_raft_applied_index gauge\nwarren_raft_applied_index %d\n", f.AppliedIndex())
	if s.src.StoreStats != nil {
		st := s.src.StoreStats()
		fmt.Fprintf(&b, "# TYPE warren_store_fsyncs_total counter\nwarren_store_fsyncs_total %d\n", st.Fsyncs)
		fmt.Fprintf(&b, "# TYPE warren_store_records_total counter\nwarren_store_records_total %d\n", st.Records)
		fmt.Fprintf(&b, "# TYPE warren_store_bytes_written_total counter\nwarren_store_bytes_written_total %d\n", st.BytesWritten)
		fmt.Fprintf(&b, "# TYPE warren_store_live_messages gauge\nwarren_store_live_messages %d\n", st.LiveMessages)
		fmt.Fprintf(&b, "# TYPE warren_store_segments gauge\nwarren_store_segments %d\n", st.Segments)
	}
	b.WriteString("# TYPE warren_queue_messages_ready gauge\n# TYPE warren_queue_messages_unacked gauge\n# TYPE warren_queue_consumers gauge\n")
	for _, q := range qs {
		lq := s.src.Node.LocalQueue(q.Vhost, q.Name)
		if lq == nil {
			continue
		}
		r, u, c := lq.Counts()
		labels := fmt.Sprintf(`{vhost=%q,queue=%q}`, q.Vhost, q.Name)
		fmt.Fprintf(&b, "warren_queue_messages_ready%s %d\nwarren_queue_messages_unacked%s %d\nwarren_queue_consumers%s %d\n",
			labels, r, labels, u, labels, c)
	}
	_, _ = w.Write([]byte(b.String()))
}
