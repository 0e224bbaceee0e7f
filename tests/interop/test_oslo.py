"""Interop tests driving the broker with Debian's python3-oslo.messaging (rabbit driver over kombu/py-amqp).

Servers, listeners and clients all run in this one process (threading executor). oslo.messaging
publishes in confirm mode, logs in with AMQPLAIN and relies on basic.return reaching it before the
basic.ack of a mandatory reply, so these tests exercise exactly what OpenStack services do.
Usage: see harness.py; normally run through run.sh.
"""

import logging
import threading

import oslo_messaging as messaging
from kombu import Connection
from oslo_config import cfg

import harness
from harness import check, check_equal, step, test, unique, wait_until

CALL_TIMEOUT = 10
POLL_TIMEOUT = 10.0


class Recorder:
    """An RPC endpoint that echoes, fails on request and records casts, per server name."""

    def __init__(self, server_name):
        self.server_name = server_name
        self._lock = threading.Lock()
        self._casts = []

    def echo(self, ctxt, value):
        return {"server": self.server_name, "value": value, "ctxt_user": ctxt.get("user")}

    @messaging.expected_exceptions(ValueError)
    def fail(self, ctxt, text):
        raise ValueError(text)

    def record(self, ctxt, value):
        with self._lock:
            self._casts.append(value)

    def casts(self):
        with self._lock:
            return list(self._casts)


class NotificationRecorder:
    """A notification endpoint for the info and error priorities only."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = []

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("info", publisher_id, event_type, payload, ctxt)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("error", publisher_id, event_type, payload, ctxt)

    def _add(self, priority, publisher_id, event_type, payload, ctxt):
        with self._lock:
            self._seen.append((priority, publisher_id, event_type, payload, ctxt.get("user")))

    def seen(self):
        with self._lock:
            return list(self._seen)


def new_conf():
    # The global CONF, as services use it: oslo registers some options (metrics) only there.
    # No config files: the test must not pick up a host's /etc/*.conf.
    conf = cfg.CONF
    conf(args=[], project="warren-interop", default_config_files=[], default_config_dirs=[])
    # The (disabled) metrics client starts a non-daemon thread that lingers this long at exit.
    conf.set_override("metrics_thread_stop_timeout", 0, group="oslo_messaging_metrics")
    return conf


class OsloFixture:
    """Owns transports, servers and listeners of one test and tears them all down, bounded."""

    def __init__(self, broker):
        self.broker = broker
        self.topic = unique("topic")
        self.conf = new_conf()
        self.transport = None
        self.notify_transport = None
        self._servers = []
        self._queues_to_delete = [self.topic]

    def __enter__(self):
        # oslo retries an unreachable broker forever; fail fast with a clear reason instead.
        try:
            with Connection(self.broker.amqp(), connect_timeout=15) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:
            raise AssertionError("broker not reachable at %s:%d: %s" % (self.broker.host, self.broker.port, exc))
        return self

    def rpc_transport(self):
        if self.transport is None:
            self.transport = messaging.get_rpc_transport(self.conf, url=self.broker.rabbit())
        return self.transport

    def start_server(self, server_name):
        endpoint = Recorder(server_name)
        target = messaging.Target(topic=self.topic, server=server_name)
        server = messaging.get_rpc_server(self.rpc_transport(), target, [endpoint], executor="threading",
                                          access_policy=messaging.DefaultRPCAccessPolicy)
        server.start()  # declares the topic, server and fanout queues before returning
        self._servers.append(server)
        self._queues_to_delete.append("%s.%s" % (self.topic, server_name))
        return endpoint

    def client(self, **prepare):
        client = messaging.get_rpc_client(self.rpc_transport(), messaging.Target(topic=self.topic),
                                          timeout=CALL_TIMEOUT)
        return client.prepare(**prepare) if prepare else client

    def start_listener(self):
        if self.notify_transport is None:
            self.notify_transport = messaging.get_notification_transport(self.conf, url=self.broker.rabbit())
        endpoint = NotificationRecorder()
        listener = messaging.get_notification_listener(
            self.notify_transport, [messaging.Target(topic=self.topic)], [endpoint], executor="threading")
        listener.start()
        self._servers.append(listener)
        self._queues_to_delete += ["%s.%s" % (self.topic, p) for p in ("info", "error", "warn")]
        return endpoint

    def notifier(self):
        if self.notify_transport is None:
            self.notify_transport = messaging.get_notification_transport(self.conf, url=self.broker.rabbit())
        return messaging.Notifier(self.notify_transport, driver="messagingv2", topics=[self.topic],
                                  publisher_id="interop.publisher")

    def __exit__(self, *exc_info):
        for server in self._servers:
            try:
                server.stop()
                server.wait()
            except Exception as exc:
                logging.warning("stopping %r: %s", server, exc)
        for transport in (self.transport, self.notify_transport):
            if transport is not None:
                # The reply queue carries only an x-expires of 30 minutes; delete it now.
                reply_queue = getattr(getattr(transport, "_driver", None), "_reply_q", None)
                if reply_queue:
                    self._queues_to_delete.append(reply_queue)
                transport.cleanup()
        self._delete_leftover_queues()
        return False

    def _delete_leftover_queues(self):
        # oslo never deletes its topic and notification queues; remove ours so runs do not pile up.
        try:
            with Connection(self.broker.amqp(), connect_timeout=15) as conn:
                for name in self._queues_to_delete:
                    channel = conn.channel()
                    try:
                        channel.queue_delete(name)
                    except Exception:
                        pass  # already gone (a closed channel is simply dropped)
        except Exception as exc:
            logging.warning("deleting leftover queues: %s", exc)


@test
def test_rpc_call(broker):
    with OsloFixture(broker) as fx:
        step("start RPC server (threading executor)")
        fx.start_server("server-a")
        client = fx.client()
        step("call echo")
        result = client.call({"user": "alice"}, "echo", value=[1, "two", {"three": 3}])
        check_equal(result, {"server": "server-a", "value": [1, "two", {"three": 3}], "ctxt_user": "alice"},
                    "call result")
        step("second call reuses the reply queue")
        check_equal(client.call({}, "echo", value="again")["value"], "again", "second call result")
        step("call directed at the server")
        check_equal(fx.client(server="server-a").call({}, "echo", value=7)["value"], 7, "directed call result")


@test
def test_rpc_call_remote_error(broker):
    with OsloFixture(broker) as fx:
        step("start RPC server")
        fx.start_server("server-a")
        client = fx.client()
        step("call a method that raises ValueError")
        try:
            client.call({}, "fail", text="boom from the server")
        except ValueError as exc:
            check("boom from the server" in str(exc), "remote error text %r lacks the message" % str(exc))
        except messaging.MessagingTimeout:
            raise AssertionError("call timed out instead of raising the remote ValueError")
        else:
            raise AssertionError("call of a failing method returned normally")
        step("call of an unknown method raises NoSuchMethod")
        try:
            client.call({}, "no_such_method")
        except messaging.RemoteError as exc:
            check_equal(exc.exc_type, "NoSuchMethod", "remote exception type")
        except messaging.NoSuchMethod:
            pass
        else:
            raise AssertionError("call of an unknown method returned normally")
        step("server still answers after errors")
        check_equal(client.call({}, "echo", value="ok")["value"], "ok", "call after errors")


@test
def test_rpc_cast(broker):
    with OsloFixture(broker) as fx:
        step("start RPC server")
        endpoint = fx.start_server("server-a")
        client = fx.client()
        step("cast three messages")
        for i in range(3):
            client.cast({}, "record", value="cast-%d" % i)
        step("server receives every cast in order")
        wait_until(lambda: len(endpoint.casts()) >= 3, POLL_TIMEOUT, "3 casts at the server")
        check_equal(endpoint.casts(), ["cast-0", "cast-1", "cast-2"], "casts received")
        step("cast directed at the server")
        fx.client(server="server-a").cast({}, "record", value="direct")
        wait_until(lambda: "direct" in endpoint.casts(), POLL_TIMEOUT, "directed cast at the server")


@test
def test_rpc_fanout_cast(broker):
    with OsloFixture(broker) as fx:
        step("start two RPC servers on one topic")
        a = fx.start_server("server-a")
        b = fx.start_server("server-b")
        step("fanout cast reaches both servers")
        fx.client(fanout=True).cast({}, "record", value="to-all")
        wait_until(lambda: "to-all" in a.casts() and "to-all" in b.casts(), POLL_TIMEOUT,
                   "the fanout cast at both servers")
        step("topic casts are shared between the servers, each delivered once")
        client = fx.client()
        for i in range(6):
            client.cast({}, "record", value="shared-%d" % i)
        wanted = {"shared-%d" % i for i in range(6)}

        def shared_seen():
            return [v for v in a.casts() + b.casts() if v.startswith("shared-")]

        wait_until(lambda: set(shared_seen()) == wanted, POLL_TIMEOUT, "all 6 topic casts")
        check_equal(sorted(shared_seen()), sorted(wanted), "topic casts delivered exactly once")
        step("server-directed cast reaches only that server")
        fx.client(server="server-b").cast({}, "record", value="only-b")
        wait_until(lambda: "only-b" in b.casts(), POLL_TIMEOUT, "directed cast at server-b")
        check("only-b" not in a.casts(), "cast directed at server-b reached server-a")


@test
def test_notification(broker):
    with OsloFixture(broker) as fx:
        step("start NotificationListener (threading executor)")
        endpoint = fx.start_listener()
        notifier = fx.notifier()
        step("Notifier(messagingv2).info")
        notifier.info({"user": "bob"}, "interop.created", {"id": 1})
        step("listener receives it")
        wait_until(lambda: endpoint.seen(), POLL_TIMEOUT, "the info notification")
        check_equal(endpoint.seen()[0], ("info", "interop.publisher", "interop.created", {"id": 1}, "bob"),
                    "notification (priority, publisher, event type, payload, ctxt user)")
        step("error priority is routed to the error endpoint")
        notifier.error({}, "interop.failed", {"id": 2})
        wait_until(lambda: len(endpoint.seen()) >= 2, POLL_TIMEOUT, "the error notification")
        check_equal(endpoint.seen()[1][:4], ("error", "interop.publisher", "interop.failed", {"id": 2}),
                    "second notification")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(harness.main())
