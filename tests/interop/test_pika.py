"""Interop tests driving the broker with Debian's python3-pika (BlockingConnection, AMQP PLAIN).

Each test uses fresh, uniquely named entities and removes them (or makes them exclusive/auto-delete)
so that runs do not interfere. Usage: see harness.py; normally run through run.sh.
"""

import time

import pika
import pika.exceptions

import harness
from harness import check, check_equal, step, test, unique, wait_until

POLL_TIMEOUT = 5.0


def connect(broker, heartbeat=None):
    params = pika.ConnectionParameters(
        host=broker.host, port=broker.port, virtual_host=broker.vhost,
        credentials=pika.PlainCredentials(broker.user, broker.password),
        heartbeat=heartbeat, connection_attempts=1, socket_timeout=15,
        blocked_connection_timeout=10)
    return pika.BlockingConnection(params)


def close_quietly(conn):
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass


def message_count(conn, queue):
    """Ready-message count from a passive declare on a throwaway channel."""
    ch = conn.channel()
    try:
        return ch.queue_declare(queue, passive=True).method.message_count
    finally:
        ch.close()


def get_body(ch, queue, what):
    method, _, body = ch.basic_get(queue, auto_ack=True)
    check(method is not None, "%s: basic.get on %s returned get-empty" % (what, queue))
    return body


def check_empty(ch, queue, what):
    method, _, body = ch.basic_get(queue, auto_ack=True)
    check(method is None, "%s: expected get-empty on %s, got message %r" % (what, queue, body))


def wait_for_message(ch, queue, what):
    """Polls basic.get until a message arrives; returns (method, properties, body)."""
    def poll():
        method, props, body = ch.basic_get(queue, auto_ack=True)
        return (method, props, body) if method is not None else None
    return wait_until(poll, POLL_TIMEOUT, what)


def drain_bodies(ch, queue):
    bodies = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())


def expect_channel_close(action, code, what):
    """Runs action, which must make the broker close the channel with the given reply code."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as exc:
        check_equal(exc.reply_code, code, "%s: channel.close reply code (text %r)" % (what, exc.reply_text))
        return exc
    raise AssertionError("%s: expected channel.close %d, but the operation succeeded" % (what, code))


def declare_exclusive(ch, arguments=None):
    name = unique("q")
    ch.queue_declare(name, exclusive=True, arguments=arguments)
    return name


@test
def test_direct_exchange(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ex = unique("direct")
        step("exchange.declare direct")
        ch.exchange_declare(ex, exchange_type="direct")
        step("queue.declare + queue.bind")
        q = declare_exclusive(ch)
        ch.queue_bind(q, ex, routing_key="red")
        step("publish matching and non-matching keys")
        ch.confirm_delivery()
        ch.basic_publish(ex, "red", b"to-red")
        ch.basic_publish(ex, "blue", b"to-blue")
        step("basic.get routed messages")
        check_equal(drain_bodies(ch, q), ["to-red"], "messages in the queue bound with 'red'")
        step("queue.unbind stops routing")
        ch.queue_unbind(q, ex, routing_key="red")
        ch.basic_publish(ex, "red", b"after-unbind")
        check_empty(ch, q, "after unbind")
        step("exchange.delete")
        ch.exchange_delete(ex)
        expect_channel_close(lambda: ch.exchange_declare(ex, passive=True), 404, "passive declare after delete")
        step("auto-delete exchange goes away with its last binding")
        ch = conn.channel()
        auto = unique("auto")
        ch.exchange_declare(auto, exchange_type="direct", auto_delete=True)
        ch.queue_bind(q, auto, routing_key="k")
        ch.queue_unbind(q, auto, routing_key="k")
        expect_channel_close(lambda: ch.exchange_declare(auto, passive=True), 404, "auto-delete exchange after unbind")
    finally:
        close_quietly(conn)


@test
def test_topic_exchange(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ex = unique("topic")
        step("declare topic exchange and bind '*.hades.#'")
        ch.exchange_declare(ex, exchange_type="topic", auto_delete=True)
        q = declare_exclusive(ch)
        ch.queue_bind(q, ex, routing_key="*.hades.#")
        step("publish keys")
        ch.confirm_delivery()
        keys = ["a.hades", "a.hades.b", "a.hades.b.c", ".hades", "hades", "hades.a",
                "a.b.hades", "a.hadesx", "ahades.b", "a.b.hades.c", ""]
        for key in keys:
            ch.basic_publish(ex, key, key.encode())
        step("collect routed keys")
        want = ["a.hades", "a.hades.b", "a.hades.b.c", ".hades"]
        check_equal(drain_bodies(ch, q), want, "keys routed by '*.hades.#'")
        ch.exchange_delete(ex)
    finally:
        close_quietly(conn)


@test
def test_fanout_exchange(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ex = unique("fanout")
        step("declare fanout and bind two queues")
        ch.exchange_declare(ex, exchange_type="fanout", auto_delete=True)
        q1, q2 = declare_exclusive(ch), declare_exclusive(ch)
        ch.queue_bind(q1, ex, routing_key="ignored")
        ch.queue_bind(q2, ex)
        step("publish")
        ch.confirm_delivery()
        ch.basic_publish(ex, "any.key", b"m1")
        ch.basic_publish(ex, "", b"m2")
        step("both queues get every message")
        check_equal(drain_bodies(ch, q1), ["m1", "m2"], "first queue")
        check_equal(drain_bodies(ch, q2), ["m1", "m2"], "second queue")
        ch.exchange_delete(ex)
    finally:
        close_quietly(conn)


@test
def test_headers_exchange(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ex = unique("headers")
        step("declare headers exchange, bind x-match all and any")
        ch.exchange_declare(ex, exchange_type="headers", auto_delete=True)
        q_all, q_any = declare_exclusive(ch), declare_exclusive(ch)
        ch.queue_bind(q_all, ex, arguments={"x-match": "all", "os": "linux", "arch": "x86"})
        ch.queue_bind(q_any, ex, arguments={"x-match": "any", "os": "linux", "arch": "arm"})
        step("publish with headers")
        ch.confirm_delivery()
        cases = [("both", {"os": "linux", "arch": "x86", "extra": 1}),
                 ("any-only", {"os": "linux", "arch": "arm"}),
                 ("none", {"os": "bsd"}),
                 ("arch-arm", {"arch": "arm"}),
                 ("no-headers", None)]
        for body, headers in cases:
            ch.basic_publish(ex, "rk", body.encode(), pika.BasicProperties(headers=headers))
        step("collect")
        check_equal(drain_bodies(ch, q_all), ["both"], "x-match all queue")
        check_equal(drain_bodies(ch, q_any), ["both", "any-only", "arch-arm"], "x-match any queue")
        ch.exchange_delete(ex)
    finally:
        close_quietly(conn)


@test
def test_consume_with_ack(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        q = declare_exclusive(ch)
        step("publish 5 messages with properties")
        props = pika.BasicProperties(content_type="text/plain", headers={"k": "v"},
                                     correlation_id="cid", reply_to="rq", message_id="mid",
                                     delivery_mode=2, app_id="interop")
        for i in range(5):
            ch.basic_publish("", q, ("m%d" % i).encode(), props)
        step("basic.consume with manual ack")
        received = []
        ch.basic_consume(q, lambda c, m, p, b: received.append((m, p, b)), auto_ack=False,
                         consumer_tag="ctag-1")
        deadline = time.monotonic() + POLL_TIMEOUT
        while len(received) < 5 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        check_equal([b.decode() for _, _, b in received], ["m%d" % i for i in range(5)], "delivered bodies")
        method, props_got, _ = received[0]
        check_equal(method.consumer_tag, "ctag-1", "consumer tag")
        check_equal(method.redelivered, False, "redelivered flag")
        check_equal((props_got.content_type, props_got.headers, props_got.correlation_id,
                     props_got.reply_to, props_got.message_id, props_got.delivery_mode, props_got.app_id),
                    ("text/plain", {"k": "v"}, "cid", "rq", "mid", 2, "interop"), "properties")
        tags = [m.delivery_tag for m, _, _ in received]
        check_equal(tags, sorted(set(tags)), "delivery tags increase")
        step("ack all but the last, then close the channel")
        for m, _, _ in received[:-1]:
            ch.basic_ack(m.delivery_tag)
        ch.basic_cancel("ctag-1")
        ch.close()
        step("only the unacked message is requeued, marked redelivered")
        ch2 = conn.channel()
        method, _, body = ch2.basic_get(q, auto_ack=True)
        check(method is not None, "unacked message was not requeued on channel close")
        check_equal(body, b"m4", "requeued body")
        check_equal(method.redelivered, True, "redelivered flag of the requeued message")
        check_empty(ch2, q, "after taking the requeued message")
    finally:
        close_quietly(conn)


@test
def test_basic_get(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        q = declare_exclusive(ch)
        step("get-empty on an empty queue")
        check_equal(ch.basic_get(q), (None, None, None), "basic.get on empty queue")
        step("publish 2, get-ok carries the remaining count")
        ch.confirm_delivery()
        ch.basic_publish("", q, b"one")
        ch.basic_publish("", q, b"two")
        method, _, body = ch.basic_get(q, auto_ack=False)
        check(method is not None, "get-empty with 2 messages queued")
        check_equal((body, method.message_count, method.redelivered, method.routing_key, method.exchange),
                    (b"one", 1, False, q, ""), "first get-ok (body, message_count, redelivered, key, exchange)")
        ch.basic_ack(method.delivery_tag)
        method, _, body = ch.basic_get(q, auto_ack=True)
        check_equal((body, method.message_count), (b"two", 0), "second get-ok (body, message_count)")
        step("get-empty again")
        check_empty(ch, q, "after draining")
    finally:
        close_quietly(conn)


@test
def test_qos_prefetch(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        q = declare_exclusive(ch)
        ch.confirm_delivery()
        for i in range(5):
            ch.basic_publish("", q, ("m%d" % i).encode())
        step("basic.qos prefetch_count=2 and consume")
        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=2)
        received = []
        consumer.basic_consume(q, lambda c, m, p, b: received.append(m), auto_ack=False)

        def pump_until(n):
            deadline = time.monotonic() + POLL_TIMEOUT
            while len(received) < n and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.05)
            check(len(received) >= n, "only %d deliveries arrived, want %d" % (len(received), n))

        pump_until(2)
        step("no third delivery while two are unacked")
        conn.process_data_events(time_limit=0.5)  # a fixed window is the only way to see an absence
        check_equal(len(received), 2, "deliveries with prefetch 2 and nothing acked")
        step("ack one, one more arrives")
        consumer.basic_ack(received[0].delivery_tag)
        pump_until(3)
        conn.process_data_events(time_limit=0.3)
        check_equal(len(received), 3, "deliveries after one ack")
        step("multiple ack releases the rest")
        consumer.basic_ack(received[2].delivery_tag, multiple=True)
        pump_until(5)
        consumer.basic_ack(received[4].delivery_tag, multiple=True)
    finally:
        close_quietly(conn)


@test
def test_reject_nack_requeue(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        q = declare_exclusive(ch)
        ch.confirm_delivery()
        ch.basic_publish("", q, b"msg")
        step("basic.reject requeue=true")
        method, _, _ = ch.basic_get(q)
        check_equal(method.redelivered, False, "first delivery redelivered flag")
        ch.basic_reject(method.delivery_tag, requeue=True)
        method, _, body = ch.basic_get(q)
        check(method is not None, "rejected message was not requeued")
        check_equal((body, method.redelivered), (b"msg", True), "after reject (body, redelivered)")
        step("basic.nack requeue=true")
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, _, body = ch.basic_get(q)
        check(method is not None, "nacked message was not requeued")
        check_equal((body, method.redelivered), (b"msg", True), "after nack (body, redelivered)")
        step("basic.nack multiple requeue=false drops")
        ch.basic_publish("", q, b"msg2")
        method2, _, _ = ch.basic_get(q)
        ch.basic_nack(method2.delivery_tag, multiple=True, requeue=False)
        check_equal(message_count(conn, q), 0, "messages left after nack requeue=false")
        check_empty(ch, q, "after nack requeue=false")
    finally:
        close_quietly(conn)


@test
def test_confirm_mode(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        q = declare_exclusive(ch)
        step("confirm.select")
        ch.confirm_delivery()
        step("each publish is acked (pika blocks on every confirm)")
        for i in range(50):
            ch.basic_publish("", q, ("m%d" % i).encode())
        check_equal(message_count(conn, q), 50, "messages after 50 confirmed publishes")
        step("unroutable non-mandatory publish is acked, not returned")
        ch.basic_publish("", unique("nowhere"), b"lost")
        step("persistent message to a durable queue is acked")
        durable = unique("durable")
        ch.queue_declare(durable, durable=True)
        ch.basic_publish("", durable, b"p", pika.BasicProperties(delivery_mode=2))
        check_equal(message_count(conn, durable), 1, "durable queue count")
        ch.queue_delete(durable)
    finally:
        close_quietly(conn)


@test
def test_mandatory_return_before_ack(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ex = unique("direct")
        ch.exchange_declare(ex, exchange_type="direct", auto_delete=True)
        q = declare_exclusive(ch)
        ch.queue_bind(q, ex, routing_key="bound")
        ch.confirm_delivery()
        step("mandatory publish with no route")
        # pika raises UnroutableError only if basic.return arrived before the basic.ack.
        try:
            ch.basic_publish(ex, "unbound", b"bounce", pika.BasicProperties(message_id="r1"), mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            check_equal(len(exc.messages), 1, "returned messages")
            ret = exc.messages[0]
            check_equal((ret.method.reply_code, ret.method.reply_text, ret.method.exchange,
                         ret.method.routing_key, ret.body, ret.properties.message_id),
                        (312, "NO_ROUTE", ex, "unbound", b"bounce", "r1"),
                        "basic.return (code, text, exchange, key, body, message_id)")
        else:
            raise AssertionError("no basic.return before the basic.ack of an unroutable mandatory publish")
        step("routable mandatory publish on the same channel is acked without a return")
        ch.basic_publish(ex, "bound", b"ok", mandatory=True)
        check_equal(drain_bodies(ch, q), ["ok"], "routed message")
        step("mandatory to the default exchange with a missing queue")
        try:
            ch.basic_publish("", unique("missing"), b"x", mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            check_equal(exc.messages[0].method.reply_code, 312, "reply code")
        else:
            raise AssertionError("no basic.return for default exchange with a missing queue")
        ch.exchange_delete(ex)
    finally:
        close_quietly(conn)


@test
def test_publish_missing_exchange(broker):
    conn = connect(broker)
    try:
        missing = unique("missing-ex")
        step("publish (no confirms) to a missing exchange, next sync call sees channel.close")
        ch = conn.channel()
        ch.basic_publish(missing, "rk", b"x")
        exc = expect_channel_close(lambda: ch.queue_declare("", exclusive=True), 404, "publish to missing exchange")
        check("NOT_FOUND" in exc.reply_text, "reply text %r lacks NOT_FOUND" % exc.reply_text)
        check(ch.is_closed, "channel still open after channel.close")
        step("confirm-mode publish to a missing exchange")
        ch2 = conn.channel()
        ch2.confirm_delivery()
        expect_channel_close(lambda: ch2.basic_publish(missing, "rk", b"x"), 404, "confirm publish to missing exchange")
        step("connection survives channel errors")
        check(conn.is_open, "connection closed after a channel error")
        ch3 = conn.channel()
        declare_exclusive(ch3)
    finally:
        close_quietly(conn)


@test
def test_passive_declare_missing(broker):
    conn = connect(broker)
    try:
        step("passive queue.declare of a missing queue")
        ch = conn.channel()
        expect_channel_close(lambda: ch.queue_declare(unique("nope"), passive=True), 404, "passive queue.declare")
        step("passive exchange.declare of a missing exchange")
        ch = conn.channel()
        expect_channel_close(lambda: ch.exchange_declare(unique("nope"), passive=True), 404, "passive exchange.declare")
        step("passive declare of existing queue succeeds")
        ch = conn.channel()
        q = declare_exclusive(ch)
        check_equal(ch.queue_declare(q, passive=True).method.queue, q, "passive declare-ok queue name")
    finally:
        close_quietly(conn)


@test
def test_redeclare_mismatch(broker):
    conn = connect(broker)
    q = unique("q")
    ex = unique("ex")
    try:
        ch = conn.channel()
        step("declare non-durable queue and direct exchange")
        ch.queue_declare(q, durable=False, auto_delete=False)
        ch.exchange_declare(ex, exchange_type="direct", auto_delete=True)
        step("identical redeclare succeeds")
        ch.queue_declare(q, durable=False, auto_delete=False)
        ch.exchange_declare(ex, exchange_type="direct", auto_delete=True)
        step("queue redeclared durable")
        expect_channel_close(lambda: ch.queue_declare(q, durable=True), 406, "queue durable mismatch")
        step("queue redeclared with different arguments")
        ch = conn.channel()
        expect_channel_close(lambda: ch.queue_declare(q, arguments={"x-max-length": 3}), 406, "queue args mismatch")
        step("exchange redeclared with another type")
        ch = conn.channel()
        expect_channel_close(lambda: ch.exchange_declare(ex, exchange_type="fanout", auto_delete=True), 406,
                             "exchange type mismatch")
    finally:
        try:
            ch = conn.channel()
            ch.queue_delete(q)
            ch.exchange_delete(ex)
        except Exception:
            pass
        close_quietly(conn)


@test
def test_exclusive_queue_locked(broker):
    owner = connect(broker)
    other = connect(broker)
    try:
        step("declare exclusive queue on connection A")
        q = declare_exclusive(owner.channel())
        step("queue.declare from connection B")
        ch = other.channel()
        expect_channel_close(lambda: ch.queue_declare(q, exclusive=False), 405, "declare of exclusive queue")
        step("basic.consume from connection B")
        ch = other.channel()
        expect_channel_close(lambda: ch.basic_consume(q, lambda *a: None), 405, "consume of exclusive queue")
        step("exclusive queue vanishes when its connection closes")
        owner.close()
        ch = other.channel()
        expect_channel_close(lambda: ch.queue_declare(q, passive=True), 404, "passive declare after owner closed")
    finally:
        close_quietly(owner)
        close_quietly(other)


@test
def test_purge_and_delete_counts(broker):
    conn = connect(broker)
    q = unique("q")
    try:
        ch = conn.channel()
        ch.queue_declare(q)
        ch.confirm_delivery()
        step("purge returns the purged count")
        for i in range(3):
            ch.basic_publish("", q, b"p")
        check_equal(ch.queue_purge(q).method.message_count, 3, "purge-ok message_count")
        check_empty(ch, q, "after purge")
        step("delete returns the count of messages deleted")
        for i in range(2):
            ch.basic_publish("", q, b"d")
        check_equal(ch.queue_delete(q).method.message_count, 2, "delete-ok message_count")
        step("queue is gone")
        expect_channel_close(lambda: ch.queue_declare(q, passive=True), 404, "passive declare after delete")
        step("delete if-empty on a non-empty queue")
        ch = conn.channel()
        ch.queue_declare(q)
        ch.basic_publish("", q, b"x")
        expect_channel_close(lambda: ch.queue_delete(q, if_empty=True), 406, "queue.delete if-empty")
    finally:
        try:
            conn.channel().queue_delete(q)
        except Exception:
            pass
        close_quietly(conn)


@test
def test_transactions(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        q = declare_exclusive(ch)
        step("tx.select, publish, not visible before commit")
        ch.tx_select()
        ch.basic_publish("", q, b"committed")
        check_equal(message_count(conn, q), 0, "messages before tx.commit")
        step("tx.commit makes it visible")
        ch.tx_commit()
        wait_until(lambda: message_count(conn, q) == 1, POLL_TIMEOUT, "1 message after commit")
        step("tx.rollback discards a publish")
        ch.basic_publish("", q, b"rolled-back")
        ch.tx_rollback()
        ch.tx_commit()  # an empty commit: the rolled-back publish must not come back
        check_equal(message_count(conn, q), 1, "messages after rollback")
        step("rolled-back ack leaves the message unacked, channel close requeues it")
        method, _, body = ch.basic_get(q)
        check_equal(body, b"committed", "body")
        ch.basic_ack(method.delivery_tag)
        ch.tx_rollback()
        ch.close()
        ch = conn.channel()
        method, _, body = ch.basic_get(q)
        check(method is not None, "message lost although its ack was rolled back")
        check_equal((body, method.redelivered), (b"committed", True), "requeued (body, redelivered)")
        step("committed ack removes the message")
        ch.tx_select()
        ch.basic_ack(method.delivery_tag)
        ch.tx_commit()
        ch.close()
        ch = conn.channel()
        check_empty(ch, q, "after committed ack")
    finally:
        close_quietly(conn)


@test
def test_message_ttl(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        step("per-message expiration drops only the expiring message")
        q = declare_exclusive(ch)
        ch.basic_publish("", q, b"expires", pika.BasicProperties(expiration="100"))
        ch.basic_publish("", q, b"stays")
        time.sleep(0.6)  # the TTL itself must elapse; this is the only fixed wait
        check_equal(drain_bodies(ch, q), ["stays"], "messages after 100ms expiration")
        step("expiration=0 expires unless delivered at once")
        ch.basic_publish("", q, b"zero", pika.BasicProperties(expiration="0"))
        check_empty(ch, q, "expiration 0 with no consumer")
        step("x-message-ttl queue argument")
        q_ttl = declare_exclusive(ch, {"x-message-ttl": 100})
        ch.basic_publish("", q_ttl, b"a")
        ch.basic_publish("", q_ttl, b"b", pika.BasicProperties(expiration="60000"))
        time.sleep(0.6)
        check_empty(ch, q_ttl, "x-message-ttl=100 after 600ms (the lower TTL wins)")
        step("message within its TTL is delivered")
        q_long = declare_exclusive(ch, {"x-message-ttl": 60000})
        ch.basic_publish("", q_long, b"fresh", pika.BasicProperties(expiration="60000"))
        check_equal(get_body(ch, q_long, "unexpired message"), b"fresh", "body")
        step("invalid expiration closes the channel")
        bad = conn.channel()
        bad.basic_publish("", q_long, b"x", pika.BasicProperties(expiration="soon"))
        expect_channel_close(lambda: bad.queue_declare(q_long, passive=True), 406, "expiration 'soon'")
    finally:
        close_quietly(conn)


def _x_death(props):
    headers = props.headers or {}
    check("x-death" in headers, "no x-death header (headers: %r)" % headers)
    return headers["x-death"]


@test
def test_dead_lettering(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        dlx = unique("dlx")
        step("declare DLX, DLQ and a queue dead-lettering with a routing key")
        ch.exchange_declare(dlx, exchange_type="direct", auto_delete=True)
        dlq = declare_exclusive(ch)
        ch.queue_bind(dlq, dlx, routing_key="dead")
        src = declare_exclusive(ch, {"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
        step("reject requeue=false dead-letters")
        ch.basic_publish("", src, b"victim", pika.BasicProperties(headers={"keep": "me"}, message_id="v1"))
        method, _, _ = ch.basic_get(src)
        ch.basic_reject(method.delivery_tag, requeue=False)
        method, props, body = wait_for_message(ch, dlq, "message in the dead-letter queue")
        check_equal((body, method.exchange, method.routing_key, props.message_id),
                    (b"victim", dlx, "dead", "v1"), "dead-lettered (body, exchange, key, message_id)")
        check_equal(props.headers.get("keep"), "me", "original header")
        deaths = _x_death(props)
        check_equal(len(deaths), 1, "x-death entries")
        death = deaths[0]
        check_equal((death.get("queue"), death.get("reason"), death.get("count"), death.get("exchange"),
                     death.get("routing-keys")), (src, "rejected", 1, "", [src]),
                    "x-death[0] (queue, reason, count, exchange, routing-keys)")
        check("time" in death, "x-death[0] has no time")
        check_equal((props.headers.get("x-first-death-queue"), props.headers.get("x-first-death-reason"),
                     props.headers.get("x-first-death-exchange")), (src, "rejected", ""), "x-first-death-*")
        step("dead-lettering the same message again increments count")
        ch.basic_publish("", src, body, props)
        method, _, _ = ch.basic_get(src)
        ch.basic_nack(method.delivery_tag, requeue=False)
        method, props, _ = wait_for_message(ch, dlq, "second dead-lettered message")
        deaths = _x_death(props)
        check_equal((len(deaths), deaths[0].get("reason"), deaths[0].get("count")), (1, "rejected", 2),
                    "x-death after second rejection (entries, reason, count)")
        step("expired messages dead-letter with reason expired, keeping their routing key")
        ex_src = declare_exclusive(ch, {"x-message-ttl": 50, "x-dead-letter-exchange": dlx})
        ch.queue_bind(dlq, dlx, routing_key=ex_src)
        ch.basic_publish("", ex_src, b"old")
        method, props, body = wait_for_message(ch, dlq, "expired message in the dead-letter queue")
        check_equal((body, method.routing_key), (b"old", ex_src), "expired dead-letter (body, key)")
        death = _x_death(props)[0]
        check_equal((death.get("reason"), death.get("queue"), death.get("count")), ("expired", ex_src, 1),
                    "x-death[0] (reason, queue, count)")
        ch.exchange_delete(dlx)
    finally:
        close_quietly(conn)


@test
def test_max_length_drop_head(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        step("x-max-length=2 queue, publish 3")
        q = declare_exclusive(ch, {"x-max-length": 2})
        for body in (b"1", b"2", b"3"):
            ch.basic_publish("", q, body)
        step("oldest is dropped")
        check_equal(drain_bodies(ch, q), ["2", "3"], "messages kept")
        step("x-max-length-bytes")
        qb = declare_exclusive(ch, {"x-max-length-bytes": 10})
        for body in (b"aaaa", b"bbbb", b"cccc"):
            ch.basic_publish("", qb, body)
        check_equal(drain_bodies(ch, qb), ["bbbb", "cccc"], "messages kept under 10 bytes")
        step("dropped head is dead-lettered with reason maxlen")
        dlq = declare_exclusive(ch)
        qd = declare_exclusive(ch, {"x-max-length": 1, "x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": dlq})
        ch.basic_publish("", qd, b"first")
        ch.basic_publish("", qd, b"second")
        method, props, body = wait_for_message(ch, dlq, "dropped message in the dead-letter queue")
        check_equal((body, _x_death(props)[0].get("reason")), (b"first", "maxlen"), "dead-lettered (body, reason)")
    finally:
        close_quietly(conn)


@test
def test_max_priority(broker):
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        step("x-max-priority=10 queue")
        q = declare_exclusive(ch, {"x-max-priority": 10})
        step("publish with mixed priorities")
        for body, prio in (("p1", 1), ("p9a", 9), ("p5", 5), ("p0", 0), ("pnone", None), ("p9b", 9),
                           ("p200", 200)):
            ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=prio))
        step("delivered highest priority first, FIFO within a priority")
        # A priority above x-max-priority counts as the maximum (10), so it beats 9.
        check_equal(drain_bodies(ch, q), ["p200", "p9a", "p9b", "p5", "p1", "p0", "pnone"], "delivery order")
        step("priority is delivered through consumers too")
        for body, prio in (("low", 1), ("high", 8)):
            ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=prio))
        received = []
        ch.basic_consume(q, lambda c, m, p, b: received.append((b.decode(), p.priority)), auto_ack=True)
        deadline = time.monotonic() + POLL_TIMEOUT
        while len(received) < 2 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        check_equal(received, [("high", 8), ("low", 1)], "consumed (body, priority)")
    finally:
        close_quietly(conn)


@test
def test_consumer_cancel_notify(broker):
    consumer_conn = connect(broker)
    admin = connect(broker)
    q = unique("q")
    try:
        step("consume from a shared queue")
        ch = consumer_conn.channel()
        ch.queue_declare(q, auto_delete=False)
        cancelled = []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
        tag = ch.basic_consume(q, lambda *a: None, auto_ack=True)
        step("delete the queue from another connection")
        admin.channel().queue_delete(q)
        step("basic.cancel arrives")
        deadline = time.monotonic() + POLL_TIMEOUT
        while not cancelled and time.monotonic() < deadline:
            consumer_conn.process_data_events(time_limit=0.1)
        check(cancelled, "no basic.cancel from the broker after the queue was deleted")
        check_equal(cancelled[0].consumer_tag, tag, "cancelled consumer tag")
        step("channel stays usable")
        check(ch.is_open, "channel closed after consumer cancel notification")
        declare_exclusive(ch)
    finally:
        try:
            admin.channel().queue_delete(q)
        except Exception:
            pass
        close_quietly(consumer_conn)
        close_quietly(admin)


@test
def test_heartbeat(broker):
    step("connect with heartbeat=2")
    conn = connect(broker, heartbeat=2)
    try:
        check_equal(conn._impl.params.heartbeat, 2, "negotiated heartbeat")
        ch = conn.channel()
        q = declare_exclusive(ch)
        step("stay idle for 6s while pika services heartbeats")
        conn.sleep(6)
        step("connection still alive after idling")
        check(conn.is_open, "connection closed while idle")
        ch.basic_publish("", q, b"alive")
        check_equal(get_body(ch, q, "after idle"), b"alive", "body")
        checker = getattr(conn._impl, "_heartbeat_checker", None)
        received = getattr(checker, "_heartbeat_frames_received", None)
        if received is not None:
            check(received >= 2, "broker sent %d heartbeat frames during 6s idle, want >= 2" % received)
    finally:
        close_quietly(conn)


@test
def test_direct_reply_to(broker):
    caller_conn, server_conn = connect(broker), connect(broker)
    try:
        server = server_conn.channel()
        q = declare_exclusive(server)

        def serve(ch, method, props, body):
            ch.basic_publish("", props.reply_to, b"re: " + body,
                             pika.BasicProperties(correlation_id=props.correlation_id))

        server.basic_consume(q, serve, auto_ack=True)
        caller = caller_conn.channel()
        step("consume amq.rabbitmq.reply-to with ack is refused (406)")
        try:
            caller.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False)
            caller_conn.process_data_events(time_limit=0.5)
        except pika.exceptions.ChannelClosedByBroker as exc:
            check_equal((exc.reply_code, exc.reply_text),
                        (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge"), "channel close")
        else:
            raise AssertionError("an acking consumer of amq.rabbitmq.reply-to was accepted")
        caller = caller_conn.channel()
        replies = {}
        caller.basic_consume("amq.rabbitmq.reply-to",
                             lambda ch, m, p, body: replies.__setitem__(p.correlation_id, body), auto_ack=True)
        step("20 calls, replies on the calling channel")
        for i in range(20):
            caller.basic_publish("", q, b"req-%d" % i,
                                 pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c%d" % i))
        deadline = time.monotonic() + POLL_TIMEOUT
        while len(replies) < 20 and time.monotonic() < deadline:
            server_conn.process_data_events(time_limit=0.05)
            caller_conn.process_data_events(time_limit=0.05)
        for i in range(20):
            check_equal(replies.get("c%d" % i), b"re: req-%d" % i, "reply c%d" % i)
    finally:
        close_quietly(caller_conn)
        close_quietly(server_conn)


if __name__ == "__main__":
    raise SystemExit(harness.main())
