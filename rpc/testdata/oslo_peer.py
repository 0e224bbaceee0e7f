"""A Python oslo.messaging peer driven by arguments, for Warren's rpc interop tests.

Every event is printed as one JSON line on stdout so the Go test can follow it:
  server  serves the test endpoint (add, echo, fail, record) until killed
  call    makes one call and prints {"result": ...} or {"error": {...}}
  cast    makes one cast (optionally fanout)
  notify  sends one messagingv2 notification
  listen  prints notifications until its stdin is closed
  bench   times --count calls of add() from --callers threads
"""
import argparse
import json
import os
import sys
import threading
import time

from oslo_config import cfg
import oslo_messaging


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def transport_url(url):
    # oslo's own scheme for the rabbit driver is rabbit://
    if url.startswith("amqp://"):
        return "rabbit://" + url[len("amqp://"):]
    return url


class TestEndpoint(object):
    def __init__(self, server, version):
        self.server = server
        self.target = oslo_messaging.Target(version=version)

    def add(self, ctxt, a, b):
        return a + b

    def echo(self, ctxt, **kwargs):
        return {"args": kwargs, "context": ctxt, "server": self.server}

    def fail(self, ctxt, message):
        raise ValueError(message)

    def record(self, ctxt, value):
        emit({"event": "cast", "value": value, "server": self.server})


class NotificationEndpoint(object):
    def _got(self, priority, ctxt, publisher_id, event_type, payload, metadata):
        emit({"event": "notification", "priority": priority, "publisher_id": publisher_id,
              "event_type": event_type, "payload": payload, "context": ctxt})

    def audit(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("audit", ctxt, publisher_id, event_type, payload, metadata)

    def debug(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("debug", ctxt, publisher_id, event_type, payload, metadata)

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("info", ctxt, publisher_id, event_type, payload, metadata)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("warn", ctxt, publisher_id, event_type, payload, metadata)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("error", ctxt, publisher_id, event_type, payload, metadata)

    def critical(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("critical", ctxt, publisher_id, event_type, payload, metadata)

    def sample(self, ctxt, publisher_id, event_type, payload, metadata):
        self._got("sample", ctxt, publisher_id, event_type, payload, metadata)


def wait_for_stdin_close():
    # The Go test holds our stdin open; EOF means it is done with us.
    sys.stdin.read()


def run_server(conf, args):
    transport = oslo_messaging.get_rpc_transport(conf, url=transport_url(args.url))
    target = oslo_messaging.Target(topic=args.topic, server=args.server, exchange=args.exchange)
    server = oslo_messaging.get_rpc_server(
        transport, target, [TestEndpoint(args.server, args.version)], executor="threading")
    server.start()
    emit({"event": "ready"})
    wait_for_stdin_close()
    server.stop()
    server.wait()
    transport.cleanup()


def run_call(conf, args):
    transport = oslo_messaging.get_rpc_transport(conf, url=transport_url(args.url))
    target = oslo_messaging.Target(topic=args.topic, server=args.server, exchange=args.exchange,
                                   version=args.version)
    client = oslo_messaging.get_rpc_client(transport, target, timeout=args.timeout)
    ctxt = json.loads(args.context)
    try:
        result = client.call(ctxt, args.method, **json.loads(args.args))
        emit({"result": result})
    except oslo_messaging.MessagingTimeout as exc:
        emit({"error": {"class": "MessagingTimeout", "message": str(exc)}})
    except oslo_messaging.RemoteError as exc:
        emit({"error": {"class": exc.exc_type, "message": exc.value}})
    except Exception as exc:
        emit({"error": {"class": type(exc).__name__, "message": str(exc).split("\n")[0]}})


def run_bench(conf, args):
    """Calls add() --count times from --callers threads; prints calls/s and
    p50/p99 latency, for comparing oslo.messaging with the Go library."""
    transport = oslo_messaging.get_rpc_transport(conf, url=transport_url(args.url))
    target = oslo_messaging.Target(topic=args.topic, exchange=args.exchange)
    client = oslo_messaging.get_rpc_client(transport, target, timeout=args.timeout)
    client.call({}, "add", a=0, b=0)  # warm up: reply queue, connections
    latencies = []
    lock = threading.Lock()
    per_thread = max(1, args.count // args.callers)

    def caller():
        mine = []
        for i in range(per_thread):
            t0 = time.monotonic()
            client.call({}, "add", a=i, b=1)
            mine.append(time.monotonic() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(args.callers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    emit({"calls": len(latencies), "callers": args.callers,
          "calls_per_s": len(latencies) / elapsed,
          "p50_ms": latencies[len(latencies) * 50 // 100] * 1000,
          "p99_ms": latencies[min(len(latencies) * 99 // 100, len(latencies) - 1)] * 1000})


def run_cast(conf, args):
    transport = oslo_messaging.get_rpc_transport(conf, url=transport_url(args.url))
    target = oslo_messaging.Target(topic=args.topic, server=args.server, exchange=args.exchange,
                                   fanout=args.fanout)
    client = oslo_messaging.get_rpc_client(transport, target)
    client.cast(json.loads(args.context), args.method, **json.loads(args.args))
    emit({"event": "sent"})


def run_notify(conf, args):
    transport = oslo_messaging.get_notification_transport(conf, url=transport_url(args.url))
    notifier = oslo_messaging.Notifier(transport, publisher_id=args.publisher_id,
                                       driver="messagingv2", topics=[args.topic])
    getattr(notifier, args.priority)(json.loads(args.context), args.event_type,
                                     json.loads(args.payload))
    emit({"event": "sent"})


def run_listen(conf, args):
    transport = oslo_messaging.get_notification_transport(conf, url=transport_url(args.url))
    targets = [oslo_messaging.Target(topic=args.topic, exchange=args.exchange)]
    listener = oslo_messaging.get_notification_listener(
        transport, targets, [NotificationEndpoint()], executor="threading", pool=args.pool)
    listener.start()
    emit({"event": "ready"})
    wait_for_stdin_close()
    listener.stop()
    listener.wait()
    transport.cleanup()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["server", "call", "cast", "notify", "listen", "bench"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--server", default=None)
    parser.add_argument("--exchange", default=None)
    parser.add_argument("--version", default=None)
    parser.add_argument("--method", default="echo")
    parser.add_argument("--args", default="{}")
    parser.add_argument("--context", default="{}")
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--fanout", action="store_true")
    parser.add_argument("--priority", default="info")
    parser.add_argument("--event-type", default="test.event")
    parser.add_argument("--payload", default="{}")
    parser.add_argument("--publisher-id", default="python.peer")
    parser.add_argument("--pool", default=None)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=1)
    args = parser.parse_args()

    conf = cfg.CONF
    conf([], project="warren-interop")
    if args.exchange:
        # The control exchange is where notifications go, and calls/casts
        # whose target names no exchange.
        oslo_messaging.set_transport_defaults(args.exchange)

    modes = {"server": run_server, "call": run_call, "cast": run_cast,
             "notify": run_notify, "listen": run_listen, "bench": run_bench}
    modes[args.mode](conf, args)
    # oslo's transport cleanup waits for its poll threads (seconds); the
    # output is flushed, so leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
