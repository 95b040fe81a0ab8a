"""Failures, skips and checks: what a test raises when the product does not do what
docs/design.md and the man pages say, or when the machine cannot run it; waiting for a
condition; the test's own log lines."""

import os
import re
import time

__all__ = ["Failure", "Skip", "fail", "check", "check_search", "check_no_search", "tail",
           "log", "wait_until", "unique_marker", "SKIP_EXIT"]


class Failure(Exception):
    """The product did not do what docs/design.md and the man pages say (or the scenario
    could not be set up)."""


class Skip(Exception):
    """The machine cannot run this test (exit 77)."""


def fail(message):
    raise Failure(message)


def check(condition, message):
    if not condition:
        raise Failure(message)


def check_search(regex, text, what):
    """Returns the match of regex in text, or fails naming what was searched."""
    m = re.search(regex, text, re.M)
    if not m:
        raise Failure(f"{what}: expected a match for /{regex}/, got:\n{tail(text, 40)}")
    return m


def check_no_search(regex, text, what):
    m = re.search(regex, text, re.M)
    if m:
        raise Failure(f"{what}: /{regex}/ must not appear, but found: {m.group(0)!r}")


def tail(text, lines):
    parts = text.splitlines()
    if len(parts) > lines:
        parts = ["..."] + parts[-lines:]
    return "\n".join("    " + p for p in parts)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value (returned) or timeout (Failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def unique_marker(tag="msg"):
    return f"smtpscreen-it-{tag}-{os.getpid()}-{int(time.time() * 1000) % 100000000}"


SKIP_EXIT = 77
