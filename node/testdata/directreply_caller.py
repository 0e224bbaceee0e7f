"""A pika RPC caller using RabbitMQ's direct reply-to, for node/directreply_test.go.

    /usr/bin/python3 directreply_caller.py AMQP_URL QUEUE N

Consumes amq.rabbitmq.reply-to (no-ack), publishes N requests to QUEUE through the default
exchange with reply_to amq.rabbitmq.reply-to and a correlation id each, and waits for every
reply. Prints one JSON line: {"replies": n, "reply_to_seen": [...]} on success; exits 1 with
the reason otherwise.
"""

import json
import sys
import time

import pika


def main():
    url, queue, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    replies = {}

    def on_reply(_ch, _method, props, body):
        replies[props.correlation_id] = body.decode()

    ch.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
    for i in range(n):
        ch.basic_publish("", queue, ("req-%d" % i).encode(),
                         pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c-%d" % i))
    deadline = time.monotonic() + 20
    while len(replies) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    for i in range(n):
        want = "re: req-%d" % i
        if replies.get("c-%d" % i) != want:
            print("reply c-%d: got %r, want %r" % (i, replies.get("c-%d" % i), want))
            sys.exit(1)
    conn.close()
    print(json.dumps({"replies": len(replies)}))


if __name__ == "__main__":
    main()
