"""oslo.messaging RPC with rabbit_quorum_queue = True (or, with --queues durable, only
amqp_durable_queues = True) through node failures, driven by cmd/node's process tests.

    /usr/bin/python3 cluster_quorum_oslo.py server --url rabbit://u:p@h1:p1,u:p@h2:p2,.../ --topic T --server S --exchange E
    /usr/bin/python3 cluster_quorum_oslo.py call   --url ... --topic T --exchange E [--timeout 5]

Both run until their stdin closes; INTEROP_LOG_LEVEL (default WARNING) sets the client log level. The transport URL may list several nodes: oslo's rabbit driver
shuffles them for each of its connections and fails over to the next when one dies. Every event
is one line on stdout:

    READY                      (server) the RPC server consumes from its quorum topic queues
    OK i server seconds        (call) call i was answered by that server, taking that long
    TIMEOUT i seconds          (call) call i timed out (MessagingTimeout); it is made again
    ERROR i type: text         (call) call i failed otherwise; it is made again
"""

import argparse
import logging
import os
import sys
import threading
import time

from oslo_config import cfg
import oslo_messaging as messaging


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Endpoint:
    def __init__(self, server):
        self.server = server

    def echo(self, ctxt, value):
        return {"server": self.server, "value": value}


def stdin_closed():
    """An event set when stdin reaches EOF: the driving test is done with us."""
    done = threading.Event()

    def wait():
        sys.stdin.read()
        done.set()
    threading.Thread(target=wait, daemon=True).start()
    return done


def transport(args):
    messaging.set_transport_defaults(args.exchange)
    conf = cfg.CONF
    conf(args=[], project="warren-cluster-interop", default_config_files=[], default_config_dirs=[])
    conf.set_override("metrics_thread_stop_timeout", 0, group="oslo_messaging_metrics")
    tr = messaging.get_rpc_transport(conf, url=args.url)
    # Registered by the driver when the transport is made; read by the connections it makes later.
    if args.queues == "quorum":
        conf.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")
    else:
        conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    return tr


def serve(args):
    tr = transport(args)
    server = messaging.get_rpc_server(tr, messaging.Target(topic=args.topic, server=args.server),
                                      [Endpoint(args.server)], executor="threading",
                                      access_policy=messaging.DefaultRPCAccessPolicy)
    done = stdin_closed()
    server.start()
    emit("READY")
    done.wait()
    server.stop()
    server.wait()
    tr.cleanup()
    return 0


def call(args):
    tr = transport(args)
    client = messaging.get_rpc_client(tr, messaging.Target(topic=args.topic), timeout=args.timeout)
    done = stdin_closed()
    i = 0
    while not done.is_set():
        started = time.monotonic()
        try:
            got = client.call({}, "echo", value=i)
            if got.get("value") != i:
                emit("ERROR %d WrongAnswer: %r" % (i, got))
            else:
                emit("OK %d %s %.3f" % (i, got.get("server"), time.monotonic() - started))
                i += 1
        except messaging.MessagingTimeout:
            emit("TIMEOUT %d %.3f" % (i, time.monotonic() - started))
        except Exception as exc:  # any other failure is reported and the call made again
            emit("ERROR %d %s: %s" % (i, type(exc).__name__, str(exc).replace("\n", " ")))
            time.sleep(0.2)
        time.sleep(args.interval)
    tr.cleanup()
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("server", "call"))
    ap.add_argument("--url", required=True, help="oslo transport URL (rabbit://...)")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--server", default="server-1")
    ap.add_argument("--exchange", required=True, help="oslo control exchange")
    ap.add_argument("--queues", choices=("quorum", "durable"), default="quorum",
                    help="quorum: rabbit_quorum_queue = True; durable: only amqp_durable_queues = True "
                    "(an unmodified application, for a broker whose default queue type is quorum)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between calls")
    args = ap.parse_args()
    logging.basicConfig(level=os.environ.get("INTEROP_LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args) if args.mode == "server" else call(args)


if __name__ == "__main__":
    raise SystemExit(main())
