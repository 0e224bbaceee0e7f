"""Interop tests driving the broker with Debian's python3-kombu on py-amqp (which logs in with AMQPLAIN).

Usage: see harness.py; normally run through run.sh.
"""

import socket
import time

import amqp
from kombu import Connection, Consumer, Exchange, Producer, Queue

import harness
from harness import check, check_equal, step, test, unique, wait_until

POLL_TIMEOUT = 5.0


def kombu_connection(broker, **kwargs):
    # connect_timeout bounds the TCP/AMQP handshake; the run.sh timeout bounds everything else.
    return Connection(broker.amqp(), connect_timeout=15, **kwargs)


def drain_until(conn, done, timeout=POLL_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.2)
        except socket.timeout:
            pass


@test
def test_login_amqplain(broker):
    step("connect with kombu's default login (py-amqp picks AMQPLAIN from the server's list)")
    with kombu_connection(broker) as conn:
        conn.connect()
        mechanisms = conn.connection.mechanisms
        check(b"AMQPLAIN" in mechanisms, "server does not offer AMQPLAIN: %r" % mechanisms)
        conn.default_channel.queue_declare(queue="", exclusive=True)
    step("connect forcing login_method=AMQPLAIN")
    with kombu_connection(broker, login_method="AMQPLAIN") as conn:
        conn.connect()
        name, _, _ = conn.default_channel.queue_declare(queue="", exclusive=True)
        check(name.startswith("amq.gen-"), "server-named queue %r does not start with amq.gen-" % name)
    step("AMQPLAIN with a wrong password is refused")
    bad = Connection("amqp://%s:%s@%s:%d/%s" % (broker.user, "wrong-" + broker.password, broker.host,
                                               broker.port, broker.quoted_vhost()),
                     connect_timeout=15, login_method="AMQPLAIN")
    try:
        bad.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu wraps the refusal differently across versions
        text = "%s %r" % (type(exc).__name__, exc)
        check("ACCESS_REFUSED" in text or "AccessRefused" in text or "403" in text,
              "wrong password failed, but not with ACCESS_REFUSED: %s" % text)
    else:
        raise AssertionError("connection with a wrong password was accepted")
    finally:
        bad.release()


@test
def test_producer_consumer_topic(broker):
    exchange = Exchange(unique("topic"), type="topic", auto_delete=True)
    # Not auto-delete: the queue must outlive the consumer so that we can check it is empty.
    queue = Queue(unique("q"), exchange=exchange, routing_key="logs.*.error")
    with kombu_connection(broker) as conn:
        channel = conn.channel()
        step("declare topic exchange and bound queue")
        queue(channel).declare()
        step("publish json and text messages")
        producer = Producer(channel, exchange=exchange)
        producer.publish({"n": 1}, routing_key="logs.web.error", serializer="json", headers={"h": "1"})
        producer.publish({"n": 2}, routing_key="logs.web.info", serializer="json")
        producer.publish("plain", routing_key="logs.db.error", content_type="text/plain",
                         content_encoding="utf-8")
        step("consume and ack")
        received = []

        def on_message(body, message):
            received.append((body, message.delivery_info["routing_key"], message.headers))
            message.ack()

        with Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json", "text/plain"]):
            drain_until(conn, lambda: len(received) >= 2)
            time_window_end = time.monotonic() + 0.3  # let a wrongly routed extra message show up
            drain_until(conn, lambda: time.monotonic() > time_window_end, timeout=0.5)
        check_equal([(b, k) for b, k, _ in received], [({"n": 1}, "logs.web.error"), ("plain", "logs.db.error")],
                    "consumed (body, routing key)")
        check_equal(received[0][2].get("h"), "1", "header of the first message")
        step("acked messages are gone")
        check(queue(channel).get() is None, "queue not empty after acking everything")
        step("queue.delete")
        queue(channel).delete()
        exchange(channel).delete()


@test
def test_simple_queue(broker):
    name = unique("simple")
    with kombu_connection(broker) as conn:
        step("SimpleQueue put")
        sq = conn.SimpleQueue(name)
        try:
            sq.put({"greeting": "hello"}, serializer="json")
            sq.put({"greeting": "again"}, serializer="json")
            wait_until(lambda: sq.qsize() == 2, POLL_TIMEOUT, "qsize 2")
            step("SimpleQueue get with timeout")
            msg = sq.get(block=True, timeout=POLL_TIMEOUT)
            check_equal(msg.payload, {"greeting": "hello"}, "first payload")
            msg.ack()
            msg = sq.get(block=True, timeout=POLL_TIMEOUT)
            check_equal(msg.payload, {"greeting": "again"}, "second payload")
            msg.ack()
            step("get_nowait on the empty queue raises Empty")
            try:
                extra = sq.get_nowait()
            except sq.Empty:
                pass
            else:
                raise AssertionError("get_nowait returned %r from an empty queue" % extra.payload)
            step("requeued message comes back")
            sq.put("once more")
            msg = sq.get(block=True, timeout=POLL_TIMEOUT)
            msg.requeue()
            msg = sq.get(block=True, timeout=POLL_TIMEOUT)
            check_equal((msg.payload, msg.delivery_info.get("redelivered")), ("once more", True),
                        "requeued (payload, redelivered)")
            msg.ack()
        finally:
            try:
                sq.queue(conn.default_channel).delete()
                sq.queue.exchange(conn.default_channel).delete()
            except Exception:
                pass
            sq.close()


@test
def test_confirm_publish(broker):
    exchange = Exchange(unique("direct"), type="direct", auto_delete=True)
    queue = Queue(unique("q"), exchange=exchange, routing_key="rk", auto_delete=True)
    with kombu_connection(broker, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue(channel).declare()
        returned = []
        producer = Producer(channel, exchange=exchange,
                            on_return=lambda exc, ex, key, msg: returned.append((exc, ex, key)))
        step("publish 20 messages, each waiting for its basic.ack")
        for i in range(20):
            producer.publish({"i": i}, routing_key="rk", serializer="json")
        check_equal(queue(channel).queue_declare(passive=True).message_count, 20, "queued messages")
        step("mandatory unroutable publish: basic.return arrives before the basic.ack")
        producer.publish({"lost": True}, routing_key="nobody", serializer="json", mandatory=True)
        # publish() returned, so the ack arrived; the return must already have been handled.
        check_equal(len(returned), 1, "returns seen when the publish was confirmed")
        exc, ex, key = returned[0]
        check_equal((getattr(exc, "reply_code", None), ex, key), (312, exchange.name, "nobody"),
                    "return (code, exchange, key)")
        step("channel still confirms after the return")
        producer.publish({"i": 20}, routing_key="rk", serializer="json", mandatory=True)
        check_equal(len(returned), 1, "returns after a routable mandatory publish")
        check_equal(queue(channel).queue_declare(passive=True).message_count, 21, "queued messages")
        queue(channel).delete()
        exchange(channel).delete()


@test
def test_confirm_delivery_tags(broker):
    """Pipelined publishes on py-amqp's own channel: every delivery tag 1..N is acked exactly once."""
    with kombu_connection(broker) as conn:
        conn.connect()
        channel = conn.connection.channel()  # the raw py-amqp channel under kombu
        acked, nacked = set(), []
        highest_seen = [0]

        def on_ack(delivery_tag, multiple):
            low = highest_seen[0] + 1 if multiple else delivery_tag
            for tag in range(low, delivery_tag + 1):
                check(tag not in acked, "delivery tag %d acked twice" % tag)
                acked.add(tag)
            highest_seen[0] = max(highest_seen[0], delivery_tag)

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(lambda tag, multiple: nacked.append(tag))
        step("confirm.select and queue.declare")
        channel.confirm_select()
        queue_name, _, _ = channel.queue_declare(queue="", exclusive=True)
        step("publish 30 messages without waiting")
        for i in range(30):
            channel.basic_publish(amqp.Message(body="m%d" % i), exchange="", routing_key=queue_name)
        step("collect basic.ack frames")
        drain_until(conn.connection, lambda: len(acked) >= 30)
        check_equal(nacked, [], "nacked delivery tags")
        check_equal(sorted(acked), list(range(1, 31)), "acked delivery tags")
        check_equal(channel.queue_declare(queue=queue_name, passive=True).message_count, 30, "queued messages")
        channel.close()


if __name__ == "__main__":
    raise SystemExit(harness.main())
