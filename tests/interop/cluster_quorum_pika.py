"""A pika publisher or consumer that keeps going through node failures, driven by cmd/node's
process tests.

    /usr/bin/python3 cluster_quorum_pika.py --urls amqp://guest:guest@h:p/,amqp://... --queue Q --count N
    /usr/bin/python3 cluster_quorum_pika.py --mode consume --urls ... --queue Q

Publish mode publishes messages "0" .. "N-1" (persistent, mandatory, with publisher confirms) to
the default exchange with routing key Q, one at a time. A message is retried until the broker
confirms it: a nack, a return or a lost connection or channel makes the script publish the same
message again, reconnecting (to the next URL of --urls in turn) when needed. So every message is
confirmed once the script ends, and one may be stored twice (a nacked or unconfirmed publish may
still have been enqueued: at-least-once).

Consume mode consumes from Q (manual acks, --prefetch, each ack --ack-delay seconds after its
delivery) until stdin closes; when the broker
cancels the consumer (consumer_cancel_notify, as when a quorum queue's leader changes) or the
connection or channel fails, it subscribes again, reconnecting when needed.

Every event is one line on stdout:

    CONNECTED url
    CONFIRMED i            (publish) the broker confirmed message i
    NACKED i               (publish) basic.nack (or basic.return) for message i; it is retried
    RETRY i reason         the connection or channel failed (at message i when publishing)
    DONE confirmed=N nacked=N retries=N
    CONSUMING              (consume) basic.consume-ok
    GOT body redelivered   (consume) a delivery (redelivered 0 or 1)
    CANCELLED              (consume) the broker cancelled the consumer
"""

import argparse
import sys
import threading
import time

import pika
import pika.exceptions


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def connect(url):
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    conn = pika.BlockingConnection(params)
    emit("CONNECTED %s" % url)
    return conn


def consume(args):
    done = threading.Event()

    def wait_stdin():
        sys.stdin.read()
        done.set()
    threading.Thread(target=wait_stdin, daemon=True).start()
    urls = args.urls.split(",")
    turn = 0
    conn = None
    while not done.is_set():
        try:
            if conn is None or not conn.is_open:
                conn = connect(urls[turn % len(urls)])
                turn += 1
            ch = conn.channel()
            ch.basic_qos(prefetch_count=args.prefetch)
            cancelled = threading.Event()

            def on_cancel(frame):
                emit("CANCELLED")
                cancelled.set()

            def on_message(channel, method, props, body):
                emit("GOT %s %d" % (body.decode(), 1 if method.redelivered else 0))
                if args.ack_delay:
                    # Acked later, as by a worker that processes it first (on this channel).
                    conn.call_later(args.ack_delay, lambda: channel.is_open and channel.basic_ack(method.delivery_tag))
                else:
                    channel.basic_ack(method.delivery_tag)

            ch.add_on_cancel_callback(on_cancel)
            ch.basic_consume(args.queue, on_message)
            emit("CONSUMING")
            while not done.is_set() and not cancelled.is_set():
                conn.process_data_events(time_limit=0.1)
            if ch.is_open:
                ch.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            emit("RETRY - %s: %s" % (type(exc).__name__, str(exc).replace("\n", " ")))
            try:
                if conn is not None and conn.is_open and not isinstance(exc, pika.exceptions.ChannelClosed):
                    conn.close()
            except Exception:
                pass
            if conn is not None and not conn.is_open:
                conn = None
            time.sleep(0.2)
    try:
        conn.close()
    except Exception:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("publish", "consume"), default="publish")
    ap.add_argument("--urls", required=True, help="comma-separated amqp:// URLs, tried in turn")
    ap.add_argument("--queue", required=True)
    ap.add_argument("--count", type=int, default=0, help="(publish) how many messages")
    ap.add_argument("--ack-delay", type=float, default=0.0, help="(consume) seconds from a delivery to its ack")
    ap.add_argument("--prefetch", type=int, default=100, help="(consume) basic.qos prefetch count")
    ap.add_argument("--interval", type=float, default=0.0, help="seconds to sleep between messages")
    ap.add_argument("--give-up", type=float, default=60.0,
                    help="fail when one message stays unconfirmed this many seconds")
    args = ap.parse_args()
    if args.mode == "consume":
        return consume(args)
    urls = args.urls.split(",")
    turn = 0
    conn = ch = None
    nacked = retries = 0
    props = pika.BasicProperties(delivery_mode=2)
    for i in range(args.count):
        first_try = time.monotonic()
        while True:
            if time.monotonic() - first_try > args.give_up:
                emit("GAVEUP %d" % i)
                return 1
            try:
                if ch is None:
                    conn = connect(urls[turn % len(urls)])
                    turn += 1
                    ch = conn.channel()
                    ch.confirm_delivery()
                ch.basic_publish("", args.queue, str(i).encode(), props, mandatory=True)
                emit("CONFIRMED %d" % i)
                break
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                nacked += 1
                emit("NACKED %d" % i)
                time.sleep(0.05)
            except (pika.exceptions.AMQPError, OSError) as exc:
                retries += 1
                emit("RETRY %d %s: %s" % (i, type(exc).__name__, str(exc).replace("\n", " ")))
                try:
                    if conn is not None and conn.is_open:
                        conn.close()
                except Exception:
                    pass
                conn = ch = None
                time.sleep(0.2)
        if args.interval:
            time.sleep(args.interval)
    emit("DONE confirmed=%d nacked=%d retries=%d" % (args.count, nacked, retries))
    try:
        conn.close()
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
