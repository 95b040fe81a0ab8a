#!/usr/bin/env python3
"""When the backend cannot take the client (docs/design.md, step 8) a client that passed gets
'421 4.3.2 Service temporarily unavailable' and the connection closes, and the session
ends with 'DISCONNECT ... backend-unavailable':
  - nothing listens on backend.address (connection refused);
  - the backend accepts but never greets (backend.connect_timeout = 1s);
  - the backend refuses XCLIENT (the proxy must never carry on as if the client were
    127.0.0.1)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def expect_421(screen, source, within, what, backend=None):
    c = harness.SmtpClient(screen.port, source=source, timeout=within + 5)
    port = c.local_port
    reply = c.read_reply(timeout=within + 5)
    check(reply.code == 421 and reply.final.startswith("421 4.3.2 Service temporarily unavailable"),
          f"{what}: expected '421 4.3.2 Service temporarily unavailable', got {reply.text!r}")
    check(c.elapsed() <= within, f"{what}: the 421 came after {c.elapsed():.2f}s (expected within {within}s)")
    c.check_closed(3, f"{what}: after 421")
    screen.wait_for_log(harness.re_connect(source, port))
    screen.wait_for_log(harness.re_pass_new(source, port))
    screen.wait_for_log(harness.re_disconnect(source, port) + r".*backend-unavailable")
    return port


def main(env):
    dead_port = harness.free_port()
    refused = env.smtpscreen(name="refused", settings={
        "backend.address": f"127.0.0.1:{dead_port}", "greet.wait": "1s"})
    expect_421(refused, "127.0.0.7", 4, "backend refuses connections")

    silent = harness.scripted_backend(env, "silent")
    slow = env.smtpscreen(name="slow", settings={
        "backend.address": f"127.0.0.1:{silent.port}", "backend.connect_timeout": "1s",
        "greet.wait": "1s"})
    expect_421(slow, "127.0.0.8", 5, "backend never greets (connect_timeout 1s)")
    check(len(silent.connections) >= 1, "the proxy never connected to the silent backend")

    picky = harness.scripted_backend(env, "refuse-xclient")
    noxclient = env.smtpscreen(name="noxclient", settings={
        "backend.address": f"127.0.0.1:{picky.port}", "backend.handoff": "xclient",
        "greet.wait": "1s"})
    expect_421(noxclient, "127.0.0.9", 5, "backend refuses XCLIENT")
    picky.wait_connections(1)
    sent = picky.connections[0]["data"].decode(errors="replace")
    check("XCLIENT" in sent.upper() and "ADDR=127.0.0.9" in sent,
          f"the proxy did not send XCLIENT ADDR=127.0.0.9 to the backend; it sent {sent!r}")
    after = sent.upper().split("XCLIENT", 1)[1]
    for verb in ("MAIL FROM", "RCPT TO", "DATA"):
        check(verb not in after, f"the proxy carried on after the backend refused XCLIENT: {sent!r}")

    for s in (refused, slow, noxclient):
        s.stop()


harness.run(main)
