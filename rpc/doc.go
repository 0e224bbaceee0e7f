// Package rpc is oslo.messaging for Go: RPC calls, casts, fanout casts and
// notifications over any AMQP 0-9-1 broker (Warren or RabbitMQ), on the
// wire format of oslo.messaging's rabbit driver, so Go and Python services
// call each other and exchange notifications through the same broker.
//
// It owns the client side of Warren's RPC story: the Transport (a
// connection with reconnect and failover across the hosts of an oslo
// transport URL, publisher confirms on every send), Client (Call, Cast,
// fanout), Server (endpoints dispatched by method, namespace and version,
// with a worker pool), Notifier and NotificationListener. It uses no Warren
// internals.
//
// # Wire contract
//
// Requests go to the topic exchange named by Target.Exchange or the
// control exchange ("openstack") with routing key "<topic>" or
// "<topic>.<server>"; fanout casts go to the auto-delete fanout exchange
// "<topic>_fanout". A server consumes the queues "<topic>",
// "<topic>.<server>" and "<topic>_fanout_<hex>". A caller receives replies
// on its queue "reply_<hex>" through the default exchange; the server
// publishes them with mandatory set and retries while that queue is
// missing. Bodies are {"oslo.version": "2.0", "oslo.message": "<JSON>"};
// context values travel as "_context_<key>" fields; "_unique_id" lets
// receivers drop duplicates. Notifications are routed to
// "<topic>.<priority>".
package rpc
