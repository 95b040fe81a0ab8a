#!/usr/bin/env python3
"""A reload that changes dnsbl.servers leaves the lookups in flight with the resolver
they were asked of (docs/design.md, "Memory per connection": a lookup holds no
reference to its resolver; the worker keeps a replaced one until the sessions that
were open at the reload are over, Worker::retire_resolver):
  - server A answers 'listed' after ALPHA_DELAY seconds; server B answers NXDOMAIN.
  - HELD clients reach the greet wait with their lookups in flight on A; then the INI
    names B and SIGHUP reloads it, before A has answered.
  - a client that comes after the reload is asked of B (and not listed);
  - A's late answers still reach the clients that asked it: each is dropped with
    '521', and 'DNSBL rank 1' is logged for it; smtpscreen keeps running. (A resolver
    freed at the reload would never tell them, or worse.)
That the replaced resolver is freed once they are over is not seen from outside:
c-ares closes its socket as soon as no query is in flight."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

HELD = 20
ALPHA_DELAY = 4.0


def main(env):
    dns_a = harness.scripted_dns(env, {"bl.test": f"slow:{ALPHA_DELAY}"})
    dns_b = harness.scripted_dns(env, {"bl.test": "nxdomain"})
    screen = env.smtpscreen(settings={
        "backend.address": "127.0.0.1:9", "greet.wait": "20s", "greet.action": "drop",
        "dnsbl.sites": "bl.test=127.0.0.[2..20]*1", "dnsbl.servers": f"127.0.0.1:{dns_a.port}",
        "dnsbl.timeout": "15s", "dnsbl.action": "drop", "cache.backend": "memory", "cache.path": None,
        "limits.shutdown_grace": "1s"})
    held = harness.hold_clients(screen.port, HELD, lambda i: f"127.0.11.{i + 1}")
    harness.wait_until(lambda: len(dns_a.queries_for("bl.test")) >= HELD, 5,
                       what=f"{HELD} queries to server A")
    t_asked = time.monotonic()

    settings = dict(screen.settings)
    settings["dnsbl.servers"] = f"127.0.0.1:{dns_b.port}"
    screen.settings = settings
    screen.write_config()
    since = screen.log_size()
    screen.signal(signal.SIGHUP)
    screen.wait_for_log(r"SIGHUP: reloaded ", since=since)
    check(time.monotonic() - t_asked < ALPHA_DELAY - 1.0,
          "the reload came after server A answered: the test proves nothing (a loaded machine?)")

    # A client after the reload: asked of B, not listed.
    late = harness.SmtpClient(screen.port, source="127.0.12.1", timeout=10)
    harness.wait_until(lambda: len(dns_b.queries_for("bl.test")) >= 1, 5, what="a query to server B")

    # A's answers reach the clients that asked A: each is dropped as listed.
    for i, s in enumerate(held):
        ip = f"127.0.11.{i + 1}"
        s.settimeout(ALPHA_DELAY + 10)
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError as e:
            harness.fail(f"{ip}: {e!r} after {got!r}")
        check(b"521 5.7.1" in got, f"{ip}: asked of server A before the reload, it was not dropped "
                                   f"when A answered 'listed': got {got!r}")
        screen.wait_for_log(harness.re_dnsbl_rank(ip, 1))
        s.close()
    check(screen.proc.poll() is None, "smtpscreen exited")
    late.close()

    screen.stop()


harness.run(main, timeout=90)
