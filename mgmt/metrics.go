package mgmt

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warrenmq/warren/datalink"
)

// metricsCollector exposes the node's state at /metrics with rabbitmq_prometheus's names and
// labels where Warren has the same thing (so RabbitMQ's Grafana dashboards work), and Warren's
// own warren_* metrics for Raft, data links and the message store. Like a RabbitMQ node, each
// node reports its own queues and connections; Prometheus scrapes every node.
type metricsCollector struct {
	s *Server

	mu            sync.Mutex
	lastLeader    string
	leaderChanges uint64
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	mIdentity      = desc("rabbitmq_identity_info", "RabbitMQ node & cluster identity info", "rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id")
	mBuild         = desc("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info", "rabbitmq_version", "prometheus_plugin_version", "erlang_version", "product_name", "product_version")
	mConnections   = desc("rabbitmq_connections", "Connections currently open")
	mChannels      = desc("rabbitmq_channels", "Channels currently open")
	mConsumers     = desc("rabbitmq_consumers", "Consumers currently connected")
	mQueues        = desc("rabbitmq_queues", "Queues available")
	mReceived      = desc("rabbitmq_global_messages_received_total", "Total number of messages received from publishers")
	mDelivered     = desc("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers")
	mDeliveredCons = desc("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers (basic.consume)")
	mDeliveredGet  = desc("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to basic.get")
	mAcked         = desc("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers")
	mRedelivered   = desc("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers")
	mReady         = desc("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", "vhost", "queue")
	mUnacked       = desc("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", "vhost", "queue")
	mQMessages     = desc("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", "vhost", "queue")
	mQConsumers    = desc("rabbitmq_queue_consumers", "Consumers on a queue", "vhost", "queue")
	mConfirmed     = desc("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers")
	mRouted        = desc("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams")
	mReturned      = desc("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable")
	mDropped       = desc("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable")
	mDeliveredAuto = desc("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using automatic acknowledgement")
	mGetAuto       = desc("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to basic.get using automatic acknowledgement")
	mConnOpened    = desc("rabbitmq_connections_opened_total", "Total number of connections opened")
	mConnClosed    = desc("rabbitmq_connections_closed_total", "Total number of connections closed or terminated")
	mMemLimit      = desc("rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes")
	mMemAlarm      = desc("rabbitmq_alarms_memory_used_watermark", "is 1 if VM memory watermark alarm is in effect")
	mResident      = desc("rabbitmq_process_resident_memory_bytes", "Memory used in bytes")

	// Warren's own (names kept from earlier releases).
	wConnections  = desc("warren_connections", "Open client connections")
	wQueues       = desc("warren_queues", "Queues in the cluster's topology")
	wReady        = desc("warren_queue_messages_ready", "Ready messages of a queue this node owns", "vhost", "queue")
	wUnacked      = desc("warren_queue_messages_unacked", "Unacknowledged messages of a queue this node owns", "vhost", "queue")
	wQConsumers   = desc("warren_queue_consumers", "Consumers of a queue this node owns", "vhost", "queue")
	wRaftTerm     = desc("warren_raft_term", "Current Raft term")
	wRaftApplied  = desc("warren_raft_applied_index", "Last Raft index applied to this node's topology")
	wRaftCommit   = desc("warren_raft_commit_index", "Last Raft index known committed")
	wRaftLast     = desc("warren_raft_last_log_index", "Last index in this node's Raft log")
	wRaftLeader   = desc("warren_raft_is_leader", "1 when this node leads Raft")
	wRaftChanges  = desc("warren_raft_leader_changes_total", "Changes of Raft leader this node has seen")
	wRaftPeers    = desc("warren_raft_peers", "Voters in the Raft configuration, as this node knows it")
	wLinkOut      = desc("warren_datalink_sent_bytes_total", "Bytes written to node-to-node data links by this process")
	wLinkWrites   = desc("warren_datalink_writes_total", "Batched writes to data links (each one system call)")
	wLinkIn       = desc("warren_datalink_received_bytes_total", "Bytes read from data links by this process")
	wLinkFramesIn = desc("warren_datalink_received_frames_total", "Frames read from data links by this process")
	wFsyncs       = desc("warren_store_fsyncs_total", "Message store group commits (each one fdatasync)")
	wRecords      = desc("warren_store_records_total", "Records written to the message store")
	wBytes        = desc("warren_store_bytes_written_total", "Bytes written to the message store")
	wBatch        = desc("warren_store_records_per_fsync", "Average records per message store group commit (batch size)")
	wLive         = desc("warren_store_live_messages", "Messages held in the message store")
	wSegments     = desc("warren_store_segments", "Message store segment files")
)

func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mIdentity, mBuild, mConnections, mChannels, mConsumers, mQueues, mReceived, mDelivered,
		mDeliveredCons, mDeliveredGet, mAcked, mRedelivered, mConfirmed, mRouted, mReturned, mDropped, mDeliveredAuto, mGetAuto,
		mConnOpened, mConnClosed, mMemLimit, mMemAlarm, mReady, mUnacked, mQMessages, mQConsumers, mResident,
		wConnections, wQueues, wReady, wUnacked, wQConsumers, wRaftTerm, wRaftApplied, wRaftCommit, wRaftLast, wRaftLeader,
		wRaftChanges, wRaftPeers, wLinkOut, wLinkWrites, wLinkIn, wLinkFramesIn, wFsyncs, wRecords, wBytes, wBatch, wLive, wSegments} {
		ch <- d
	}
}

func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	id := s.src.Node.ID()
	gauge(mIdentity, 1, id, clusterName, clusterName)
	gauge(mBuild, 1, APIVersion, APIVersion, runtime.Version(), "Warren", s.src.Version)
	st := s.local()
	channels, consumers := 0, 0
	for _, cn := range st.Connections {
		channels += len(cn.Channels)
		for _, chn := range cn.Channels {
			consumers += len(chn.Consumers)
		}
	}
	gauge(mConnections, float64(len(st.Connections)))
	gauge(wConnections, float64(len(st.Connections)))
	gauge(mChannels, float64(channels))
	gauge(mConsumers, float64(consumers))
	gauge(mQueues, float64(len(st.Queues)))
	gauge(wQueues, float64(len(s.src.Node.FSM().Queues(""))))
	m := st.Messages
	counter(mReceived, float64(m.Publish))
	counter(mDelivered, float64(m.Deliver+m.Get))
	counter(mDeliveredCons, float64(m.Deliver-m.DeliverNoAck))
	counter(mDeliveredGet, float64(m.Get-m.GetNoAck))
	counter(mDeliveredAuto, float64(m.DeliverNoAck))
	counter(mGetAuto, float64(m.GetNoAck))
	counter(mConfirmed, float64(m.Confirm))
	counter(mRouted, float64(m.Routed))
	counter(mReturned, float64(m.ReturnedUnroutable))
	counter(mDropped, float64(m.DroppedUnroutable))
	counter(mConnOpened, float64(m.ConnectionsOpened))
	counter(mConnClosed, float64(m.ConnectionsClosed))
	counter(mAcked, float64(m.Ack))
	counter(mRedelivered, float64(m.Redeliver))
	for _, q := range st.Queues {
		gauge(mReady, float64(q.Ready), q.Vhost, q.Name)
		gauge(mUnacked, float64(q.Unacked), q.Vhost, q.Name)
		gauge(mQMessages, float64(q.Ready+q.Unacked), q.Vhost, q.Name)
		gauge(mQConsumers, float64(q.Consumers), q.Vhost, q.Name)
		gauge(wReady, float64(q.Ready), q.Vhost, q.Name)
		gauge(wUnacked, float64(q.Unacked), q.Vhost, q.Name)
		gauge(wQConsumers, float64(q.Consumers), q.Vhost, q.Name)
	}
	gauge(mResident, float64(st.MemUsed))
	alarm := 0.0
	if st.MemAlarm {
		alarm = 1
	}
	gauge(mMemAlarm, alarm)
	gauge(mMemLimit, float64(st.MemLimit))
	if s.src.RaftStats != nil {
		rs := s.src.RaftStats()
		num := func(k string) float64 { v, _ := strconv.ParseFloat(rs[k], 64); return v }
		gauge(wRaftTerm, num("term"))
		gauge(wRaftApplied, num("applied_index"))
		gauge(wRaftCommit, num("commit_index"))
		gauge(wRaftLast, num("last_log_index"))
		gauge(wRaftPeers, num("num_peers")+1)
		leader := s.leader()
		isLeader := 0.0
		if leader == id {
			isLeader = 1
		}
		gauge(wRaftLeader, isLeader)
		c.mu.Lock()
		c.observeLeaderLocked(leader)
		changes := c.leaderChanges
		c.mu.Unlock()
		counter(wRaftChanges, float64(changes))
	}
	tr := datalink.TrafficStats()
	counter(wLinkOut, float64(tr.BytesOut))
	counter(wLinkWrites, float64(tr.Writes))
	counter(wLinkIn, float64(tr.BytesIn))
	counter(wLinkFramesIn, float64(tr.FramesIn))
	if s.src.StoreStats != nil {
		ss := s.src.StoreStats()
		counter(wFsyncs, float64(ss.Fsyncs))
		counter(wRecords, float64(ss.Records))
		counter(wBytes, float64(ss.BytesWritten))
		gauge(wBatch, ss.RecordsPerFsync)
		gauge(wLive, float64(ss.LiveMessages))
		gauge(wSegments, float64(ss.Segments))
	}
}

// observeLeader counts a change of Raft leader (called at every sample and scrape).
func (c *metricsCollector) observeLeader(leader string) {
	c.mu.Lock()
	c.observeLeaderLocked(leader)
	c.mu.Unlock()
}

func (c *metricsCollector) observeLeaderLocked(leader string) {
	if leader != "" && leader != c.lastLeader {
		if c.lastLeader != "" {
			c.leaderChanges++
		}
		c.lastLeader = leader
	}
}

// metricsHandler builds the /metrics handler over a registry of its own (no global state, so
// several nodes in one process each report themselves).
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil})
}
