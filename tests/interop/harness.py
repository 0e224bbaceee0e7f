"""Shared harness for Warren's interop tests: test registry, step tracking, polling and the CLI.

Every test_*.py file registers its tests with @test and ends with harness.main(). A file is run as

    /usr/bin/python3 test_x.py --list          # names of its tests, one a line
    /usr/bin/python3 test_x.py URL NAME        # one test, exit 0 on pass
    /usr/bin/python3 test_x.py URL             # all tests of the file, sequentially

run.sh uses the first two forms so that each test gets its own process and its own timeout.
Steps are printed as they start ("STEP name") so that a test killed by the timeout still says
where it hung.
"""

import os
import sys
import time
import traceback
import uuid
from urllib.parse import unquote, urlsplit

_TESTS = []
_current_step = "(setup)"
_started = time.monotonic()


def test(fn):
    """Registers fn(url) as a test named after the function without its 'test_' prefix."""
    name = fn.__name__[5:] if fn.__name__.startswith("test_") else fn.__name__
    _TESTS.append((name, fn))
    return fn


def step(name):
    """Marks the start of a step; a failure or timeout is reported against the last step."""
    global _current_step
    _current_step = name
    print("STEP %s (at %.2fs)" % (name, time.monotonic() - _started), flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_equal(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate until it returns a truthy value, which is returned; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def unique(prefix):
    """A name no earlier run used, so runs never see each other's leftovers."""
    return "interop.%s.%s" % (prefix, uuid.uuid4().hex[:10])


class BrokerURL:
    """The parts of amqp://user:pass@host:port/vhost; an empty or missing vhost means '/'."""

    def __init__(self, url):
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError("broker URL must start with amqp://, got %r" % url)
        self.url = url
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 5672
        self.user = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        self.vhost = unquote(path) if path else "/"

    def quoted_vhost(self):
        return "%2F" if self.vhost == "/" else self.vhost

    def amqp(self):
        """The URL in the form pika's URLParameters and kombu both read the same way."""
        return "amqp://%s:%s@%s:%d/%s" % (
            self.user, self.password, self.host, self.port, self.quoted_vhost())

    def rabbit(self):
        """The transport URL oslo.messaging's rabbit driver expects."""
        vhost = "" if self.vhost == "/" else self.vhost
        return "rabbit://%s:%s@%s:%d/%s" % (self.user, self.password, self.host, self.port, vhost)


def _run_one(url, name, fn):
    global _current_step
    _current_step = "(setup)"
    started = time.monotonic()
    print("STEP (setup) (at %.2fs)" % (started - _started), flush=True)
    try:
        fn(BrokerURL(url))
    except Exception as exc:  # any failure of the client or an assertion fails the test
        if os.environ.get("INTEROP_TRACE"):
            traceback.print_exc()
        reason = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        print("FAIL %s: step '%s': %s" % (name, _current_step, reason), flush=True)
        return False
    print("PASS %s (%.1fs)" % (name, time.monotonic() - started), flush=True)
    return True


def main():
    args = sys.argv[1:]
    if args == ["--list"]:
        for name, _ in _TESTS:
            print(name)
        return 0
    if len(args) not in (1, 2):
        print("usage: %s --list | URL [TEST]" % sys.argv[0], file=sys.stderr)
        return 2
    url = args[0]
    selected = _TESTS
    if len(args) == 2:
        selected = [(n, f) for n, f in _TESTS if n == args[1]]
        if not selected:
            print("FAIL %s: no such test in %s" % (args[1], sys.argv[0]), flush=True)
            return 2
    failed = 0
    for name, fn in selected:
        if not _run_one(url, name, fn):
            failed += 1
    return 1 if failed else 0
