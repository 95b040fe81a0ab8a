#!/usr/bin/env python3
"""backend.idle_timeout (docs/design.md, step 8, issue 6): once a client is handed off, the
relay ends when neither side has sent anything for idle_timeout (2s here).
  - a handed-off client that goes quiet is closed about 2s after the last byte either
    way; the backend's connection is closed too; one 'DISCONNECT ... idle-timeout';
  - a client that keeps talking (a NOOP every 0.8s for 5s) is not closed: activity
    restarts the idle clock, and its message then goes through;
  - the same after a deep-tested handoff (smtpscreen replayed the dialog);
  - a backend that stops answering in the middle of DATA (never answers the end of
    data): the client gets no 250, the session closes after idle_timeout."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

IDLE = 2.0


def quiet_client_closed(screen, backend, c, source, what):
    port = c.local_port
    started = time.monotonic()
    closed = c.wait_closed(IDLE + 4)
    t = time.monotonic() - started
    check(closed, f"{what}: an idle handed-off client was not closed within {IDLE + 4}s")
    check(IDLE - 0.2 <= t <= IDLE + 1.2, f"{what}: closed {t:.2f}s after the last byte (idle_timeout {IDLE}s)")
    harness.check_one_disconnect(screen, source, port, outcome="idle-timeout")
    rec = next(r for r in backend.connections if r["proxy"] and r["proxy"][1] == port)
    harness.wait_until(lambda: rec["closed"], 3, what=f"{what}: the backend connection closing")
    harness.log(f"{what}: closed after {t:.2f}s idle; got {c.buf!r}")
    return t


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "backend.idle_timeout": "2s"})

    # Quiet after the greeting.
    c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=10)
    reply = c.read_greeting()
    check("scripted.test" in reply.final, f"expected the backend's 220, got {reply.text!r}")
    quiet_client_closed(screen, backend, c, "127.0.0.7", "quiet after the greeting")

    # Quiet after a few commands.
    c = harness.SmtpClient(screen.port, source="127.0.0.8", timeout=10)
    c.read_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    quiet_client_closed(screen, backend, c, "127.0.0.8", "quiet after MAIL")

    # Busy: a NOOP every 0.8s for 5s, then a message.
    c = harness.SmtpClient(screen.port, source="127.0.0.9", timeout=10)
    port = c.local_port
    c.read_greeting()
    c.ehlo()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        time.sleep(0.8)
        c.expect("NOOP", 250)
    c.send_mail(harness.unique_marker("busy"), ehlo=False)
    harness.check_one_disconnect(screen, "127.0.0.9", port, outcome="handoff")

    # After a deep-tested handoff.
    deep = env.smtpscreen(name="deep", settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "backend.idle_timeout": "2s"}))
    c = harness.deep_client(deep, "127.0.0.11")
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 250)
    quiet_client_closed(deep, backend, c, "127.0.0.11", "quiet after a deep-tested handoff")

    # A backend that never answers the end of data.
    stalled = harness.scripted_backend(env, "stall-at-dot")
    stall = env.smtpscreen(name="stall", settings={
        "backend.address": f"127.0.0.1:{stalled.port}", "greet.wait": "1s",
        "backend.idle_timeout": "2s"})
    c = harness.SmtpClient(stall.port, source="127.0.0.12", timeout=10)
    c.read_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 250)
    c.expect("DATA", 354)
    c.send(harness.message_text("stalled") + ".\r\n")
    quiet_client_closed(stall, stalled, c, "127.0.0.12", "backend silent after the end of data")
    check(b"250" not in c.buf, f"the client got a 250 the backend never gave: {c.buf!r}")
    for s in (screen, deep, stall):
        s.stop()


harness.run(main)
