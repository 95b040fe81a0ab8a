#!/usr/bin/env python3
"""When the backend cannot be reached at the end of the deep tests (docs/design.md, step 8), the
client's RCPT -- the command that triggers the handoff -- gets
'421 4.3.2 Service temporarily unavailable' and the connection is closed; smtpscreen
logs DISCONNECT ... backend-unavailable. Never a 250 (docs/design.md, step 8: smtpscreen
never answers 250 to a message the backend did not accept):
  - nothing listens on backend.address: at once;
  - the backend accepts and never greets: after backend.connect_timeout (2s)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def rcpt_gets_421(screen, src, min_t, max_t, tag):
    c = harness.deep_client(screen, src)
    port = c.local_port
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    t0 = time.monotonic()
    r = c.cmd("RCPT TO:<user@example.test>", timeout=10)
    t = time.monotonic() - t0
    check(r.final.startswith("421 4.3.2 Service temporarily unavailable"),
          f"{tag}: the RCPT must get '421 4.3.2 Service temporarily unavailable', got {r.text!r}")
    check(min_t <= t <= max_t, f"{tag}: the 421 came after {t:.2f}s, expected {min_t}..{max_t}s")
    c.check_closed(3, f"{tag}: after the 421")
    screen.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} backend-unavailable")


def main(env):
    dns = env.rbldnsd()
    silent = harness.scripted_backend(env, "silent")
    down = env.smtpscreen(dns=dns, name="down", settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{harness.free_port()}", "greet.wait": "1s"}))
    # An explicit EHLO offer: with 'auto' smtpscreen would also probe the silent backend's
    # keywords, and the count below is of handoffs alone.
    mute = env.smtpscreen(dns=dns, name="mute", settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{silent.port}", "backend.connect_timeout": "2s", "greet.wait": "1s",
        "deep.ehlo_keywords": "SIZE 10240000, 8BITMIME"}))
    rcpt_gets_421(down, "127.0.0.106", 0.0, 1.0, "backend refuses connections")
    rcpt_gets_421(mute, "127.0.0.107", 1.8, 3.5, "backend never greets")
    check(len(silent.connections) == 1, f"the silent backend saw {len(silent.connections)} connections, expected 1")
    down.stop()
    mute.stop()


harness.run(main)
