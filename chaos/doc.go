// Package chaos owns Warren's chaos suite: a workload of real AMQP and RPC clients that
// publish, consume, call and churn topology against a running cluster (workload.go, rpcload.go,
// churn.go), a seeded nemesis that kills, pauses, partitions and wipes nodes through the cluster
// scripts (nemesis.go), the end-of-run heal and drain (drain.go, cluster.go), and a pure
// checker in the manner of Jepsen's total-queue checker that turns the recorded histories
// into a verdict (checker.go). cmd/chaos wires them together; scripts/chaos.sh brings a
// cluster up around it.
//
// The checker is deliberately independent of the clients: it sees only what was sent, what
// was confirmed, what was received (with the redelivered flag), what RPC calls returned and
// what digest each node reported, so its unit tests can feed it hand-made histories.
package chaos
