"""Interop tests of replicated (quorum) queues with Debian's python3-pika and python3-oslo.messaging.

`x-queue-type: quorum` must behave as in RabbitMQ 3.10 on a single broker: the same refusals with the
same texts, confirmed publishes, consumption, requeue with the redelivered flag, and
oslo.messaging's own `rabbit_quorum_queue = True` option making its topic queues quorum queues.
Whether a queue is a quorum queue is checked through AMQP alone (RabbitMQ's management API is not
enabled on the reference broker): re-declaring it with `x-queue-type: quorum` succeeds and
re-declaring it without the argument is refused as inequivalent.
Usage: see harness.py; normally run through run.sh.
"""

import importlib
import logging

import pika

import harness
from harness import check, check_equal, step, test, unique, wait_until


def _helpers(module):
    """Imports a sibling test file for its helpers without adding its tests to this file's."""
    registered = len(harness._TESTS)
    mod = importlib.import_module(module)
    del harness._TESTS[registered:]
    return mod


_pika = _helpers("test_pika")
close_quietly, connect = _pika.close_quietly, _pika.connect
expect_channel_close, message_count = _pika.expect_channel_close, _pika.message_count

QUORUM = {"x-queue-type": "quorum"}
POLL_TIMEOUT = 10.0


def check_is_quorum(conn, queue):
    """Fails unless queue exists as a quorum queue (checked by declaration equivalence)."""
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments=dict(QUORUM))  # equivalent: no error
    ch.close()
    exc = expect_channel_close(lambda: conn.channel().queue_declare(queue, durable=True), 406,
                               "re-declare %s without x-queue-type" % queue)
    check_equal(exc.reply_text,
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '%s' in vhost '/': "
                "received none but current is the value 'quorum' of type 'longstr'" % queue,
                "refusal of a classic re-declaration of a quorum queue")


@test
def test_quorum_declare_refusals(broker):
    conn = connect(broker)
    try:
        name = unique("qq")

        def refused(what, want_text, **kwargs):
            step("declare a %s quorum queue" % what)
            exc = expect_channel_close(
                lambda: conn.channel().queue_declare(arguments=dict(QUORUM), **kwargs), 406, what)
            check_equal(exc.reply_text, "PRECONDITION_FAILED - " + want_text, "refusal text (%s)" % what)

        refused("non-durable", "invalid property 'non-durable' for queue '%s' in vhost '/'" % name,
                queue=name, durable=False)
        refused("exclusive", "invalid property 'exclusive-owner' for queue '%s' in vhost '/'" % name,
                queue=name, durable=True, exclusive=True)
        refused("auto-delete", "invalid property 'auto-delete' for queue '%s' in vhost '/'" % name,
                queue=name, durable=True, auto_delete=True)
        refused("server-named", "Cannot declare a server-named queue for type rabbit_quorum_queue",
                queue="", durable=True)
        step("x-max-priority is refused for a quorum queue")
        exc = expect_channel_close(
            lambda: conn.channel().queue_declare(name, durable=True, arguments=dict(QUORUM, **{"x-max-priority": 5})),
            406, "x-max-priority on a quorum queue")
        check_equal(exc.reply_text, "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '%s' "
                    "in vhost '/' of queue type rabbit_quorum_queue" % name, "refusal text (x-max-priority)")
        step("none of the refused declarations created the queue")
        exc = expect_channel_close(lambda: conn.channel().queue_declare(name, passive=True), 404,
                                   "passive declare after refusals")
        check("no queue '%s'" % name in exc.reply_text, "404 text %r does not name the queue" % exc.reply_text)

        step("a valid quorum declaration, then inequivalent re-declarations")
        ch = conn.channel()
        ok = ch.queue_declare(name, durable=True, arguments=dict(QUORUM))
        check_equal(ok.method.queue, name, "declare-ok queue name")
        try:
            check_is_quorum(conn, name)
            exc = expect_channel_close(
                lambda: conn.channel().queue_declare(name, durable=True, arguments={"x-queue-type": "classic"}),
                406, "re-declare as classic")
            check_equal(exc.reply_text, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '%s' "
                        "in vhost '/': received 'classic' but current is 'quorum'" % name, "classic re-declare text")
            step("passive declare of the quorum queue")
            check_equal(conn.channel().queue_declare(name, passive=True).method.queue, name, "passive declare-ok")
        finally:
            conn.channel().queue_delete(name)
    finally:
        close_quietly(conn)


@test
def test_quorum_arguments(broker):
    conn = connect(broker)
    name = unique("qq")
    try:
        # What oslo.messaging's rabbit_quorum_* options and common applications send.
        for extra in ({"x-delivery-limit": 5}, {"x-quorum-initial-group-size": 3},
                      {"x-max-in-memory-length": 100}, {"x-max-in-memory-bytes": 100000},
                      {"x-max-length": 10, "x-overflow": "reject-publish"},
                      {"x-dead-letter-exchange": "amq.fanout"}, {"x-single-active-consumer": True}):
            step("declare a quorum queue with %r" % extra)
            ch = conn.channel()
            ch.queue_declare(name, durable=True, arguments=dict(QUORUM, **extra))
            ch.confirm_delivery()
            ch.basic_publish("", name, b"x", pika.BasicProperties(delivery_mode=2))
            # (No basic.get: RabbitMQ refuses it on a single-active-consumer quorum queue.)
            wait_until(lambda: message_count(conn, name) == 1, POLL_TIMEOUT, "the message in the queue")
            ch.queue_delete(name)
        step("x-queue-mode is refused for a quorum queue")
        exc = expect_channel_close(
            lambda: conn.channel().queue_declare(name, durable=True, arguments=dict(QUORUM, **{"x-queue-mode": "lazy"})),
            406, "x-queue-mode on a quorum queue")
        check_equal(exc.reply_text, "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue '%s' "
                    "in vhost '/' of queue type rabbit_quorum_queue" % name, "refusal text (x-queue-mode)")
    finally:
        try:
            conn.channel().queue_delete(name)
        except Exception:
            pass
        close_quietly(conn)


@test
def test_quorum_confirm_consume_requeue(broker):
    conn = connect(broker)
    name = unique("qq")
    try:
        step("declare a quorum queue")
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments=dict(QUORUM))
        step("publish 20 persistent messages with confirms")
        ch.confirm_delivery()
        for i in range(20):
            # BlockingChannel in confirm mode raises NackError / UnroutableError on a nack / return.
            ch.basic_publish("", name, ("m%d" % i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
        wait_until(lambda: message_count(conn, name) == 20, POLL_TIMEOUT, "20 ready messages")

        step("consume; reject m3 and m7 with requeue")
        cons = conn.channel()
        cons.basic_qos(prefetch_count=50)
        seen = []  # (body, redelivered)

        def on_message(channel, method, props, body):
            body = body.decode()
            seen.append((body, method.redelivered))
            if body in ("m3", "m7") and not method.redelivered:
                channel.basic_reject(method.delivery_tag, requeue=True)
            else:
                channel.basic_ack(method.delivery_tag)

        tag = cons.basic_consume(name, on_message)

        def all_acked():
            conn.process_data_events(time_limit=0.1)
            return len(seen) >= 22
        wait_until(all_acked, POLL_TIMEOUT, "22 deliveries (20 + 2 requeued)", interval=0)
        cons.basic_cancel(tag)
        firsts = [b for b, r in seen if not r]
        again = sorted(b for b, r in seen if r)
        check_equal(sorted(firsts, key=lambda b: int(b[1:])), ["m%d" % i for i in range(20)],
                    "first deliveries (redelivered=False)")
        check_equal(firsts, ["m%d" % i for i in range(20)], "first deliveries in publish order")
        check_equal(again, ["m3", "m7"], "requeued messages delivered again with redelivered=True")
        check_equal(len(seen), 22, "deliveries in all")

        step("queue is empty once everything is acked")
        wait_until(lambda: message_count(conn, name) == 0, POLL_TIMEOUT, "an empty queue")
        method, _, body = cons.basic_get(name, auto_ack=True)
        check(method is None, "basic.get on the drained queue returned %r" % body)

        step("basic.get, then basic.nack with requeue")
        ch.basic_publish("", name, b"got", pika.BasicProperties(delivery_mode=2))
        method, _, body = wait_until(lambda: _get(cons, name), POLL_TIMEOUT, "a message by basic.get")
        check_equal((body, method.redelivered), (b"got", False), "first basic.get")
        cons.basic_nack(method.delivery_tag, requeue=True)
        method, _, body = wait_until(lambda: _get(cons, name), POLL_TIMEOUT, "the nacked message again")
        check_equal((body, method.redelivered), (b"got", True), "basic.get after nack with requeue")
        cons.basic_ack(method.delivery_tag)
        wait_until(lambda: message_count(conn, name) == 0, POLL_TIMEOUT, "an empty queue after the ack")
    finally:
        try:
            conn.channel().queue_delete(name)
        except Exception:
            pass
        close_quietly(conn)


def _get(ch, queue):
    method, props, body = ch.basic_get(queue, auto_ack=False)
    return (method, props, body) if method is not None else None


@test
def test_oslo_rpc_quorum_queues(broker):
    # Imported here so that a host without oslo still runs the pika tests of this file.
    import oslo_messaging
    OsloFixture = _helpers("test_oslo").OsloFixture

    # rabbit_quorum_queue makes oslo declare its control exchange durable; a shared one
    # ("openstack") would then be inequivalent for every non-durable oslo user of the broker.
    control = unique("control")
    oslo_messaging.set_transport_defaults(control)
    try:
        with OsloFixture(broker) as fx:
            # The rabbit driver registers its options when the transport is made; its
            # connections, made later, read them.
            fx.rpc_transport()
            fx.conf.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")
            step("start an RPC server with rabbit_quorum_queue = True")
            endpoint = fx.start_server("server-a")
            client = fx.client()
            step("call echo")
            check_equal(client.call({"user": "carol"}, "echo", value=[1, 2])["value"], [1, 2], "call result")
            step("call directed at the server")
            check_equal(fx.client(server="server-a").call({}, "echo", value="x")["server"], "server-a",
                        "directed call answered by")
            step("casts reach the server in order")
            for i in range(5):
                client.cast({}, "record", value="c%d" % i)
            wait_until(lambda: len(endpoint.casts()) >= 5, POLL_TIMEOUT, "5 casts at the server")
            check_equal(endpoint.casts(), ["c%d" % i for i in range(5)], "casts received")
            step("the topic and server queues are quorum queues")
            conn = connect(broker)
            try:
                check_is_quorum(conn, fx.topic)
                check_is_quorum(conn, "%s.server-a" % fx.topic)
                step("the control exchange is durable")
                conn.channel().exchange_declare(control, "topic", durable=True)  # equivalent: no error
            finally:
                close_quietly(conn)
            step("a call after the checks still succeeds")
            check_equal(client.call({}, "echo", value="after")["value"], "after", "call after the checks")
    finally:
        conn = connect(broker)
        try:
            conn.channel().exchange_delete(control)
        finally:
            close_quietly(conn)

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(harness.main())
