#!/usr/bin/env python3
"""Backend connect and greeting timeouts and bad greetings (docs/design.md, step 8, issue 6):
whenever the backend cannot be reached or does not greet in time, the client gets '421 4.3.2
Service temporarily unavailable' and the connection closes; the log says why
('backend unavailable for [ip]:port: ...') and the session ends with one
'DISCONNECT ... backend-unavailable'. backend.connect_timeout = 2s.
  - accepts and never greets: the 421 comes connect_timeout after the greet wait (not
    before, and not much after);
  - sends '220-' and never the final line: the same;
  - greets with 421 (4xx) or 554 (5xx): that is the backend refusing this client, not
    being unavailable: its reply reaches the client at once, as it is, logged as
    'NOQUEUE: reject: CONNECT from [ip]:port: <reply>', outcome backend-refused
    (test_backend_refusal_relayed has the real Postfix's anvil refusals);
  - the same silent backend after the deep tests: the 421 answers the client's RCPT,
    connect_timeout after it."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CONNECT_TIMEOUT = 2.0
GREET_WAIT = 1.0


def run_case(screen, backend, source, what, lo, hi, why, greeting):
    c = harness.SmtpClient(screen.port, source=source, timeout=10)
    port = c.local_port
    reply = c.read_greeting(timeout=8)
    t = reply.t_final
    check(reply.lines[0].startswith("220-"), f"{what}: the greeting must start with our '220-': {reply.text!r}")
    check(lo <= t <= hi, f"{what}: the reply came {t:.2f}s after connect (expected {lo}..{hi}s)")
    if not greeting.startswith("220"):
        check(reply.final == greeting, f"{what}: the backend's refusal must reach the client as it is, "
                                       f"got {reply.text!r}")
        m = screen.wait_for_log(rf"NOQUEUE: reject: CONNECT from {harness.ip_port(source, port)}: (.*)")
        check(m.group(1) == greeting, f"{what}: the log must quote the backend's reply: {m.group(0)!r}")
        c.send("QUIT\r\n")   # a 554 greeter waits for it (RFC 5321 3.1); the scripted one too
        c.close()
        harness.check_one_disconnect(screen, source, port, outcome="backend-refused")
        harness.log(f"{what}: {reply.final!r} after {t:.2f}s, relayed")
        return
    check(reply.code == 421 and reply.final.startswith("421 4.3.2 Service temporarily unavailable"),
          f"{what}: expected '421 4.3.2 Service temporarily unavailable', got {reply.text!r}")
    check(not any("scripted.test" in ln for ln in reply.lines),
          f"{what}: the backend's bad greeting was relayed to the client: {reply.text!r}")
    c.check_closed(3, f"{what}: after the 421")
    m = screen.wait_for_log(rf"backend unavailable for {harness.ip_port(source, port)}: (.*)")
    if why:
        check(why.lower() in m.group(1).lower(), f"{what}: the log should say {why!r}: {m.group(0)!r}")
    harness.check_one_disconnect(screen, source, port, outcome="backend-unavailable")
    backend.wait_connections(1)
    harness.log(f"{what}: {reply.final!r} after {t:.2f}s; log: {m.group(1)!r}")


def main(env):
    cases = [
        # mode, greeting, source, lo, hi, expected words in the log
        ("silent", "220 scripted.test ESMTP", "127.0.0.7",
         GREET_WAIT + CONNECT_TIMEOUT - 0.15, GREET_WAIT + CONNECT_TIMEOUT + 0.8, "connect_timeout"),
        ("partial-greeting", "220 scripted.test ESMTP", "127.0.0.8",
         GREET_WAIT + CONNECT_TIMEOUT - 0.15, GREET_WAIT + CONNECT_TIMEOUT + 0.8, "connect_timeout"),
        ("smtp", "421 4.3.2 scripted.test busy, try later", "127.0.0.9",
         GREET_WAIT - 0.15, GREET_WAIT + 0.8, "421"),
        ("smtp", "554 5.3.2 scripted.test no SMTP service here", "127.0.0.11",
         GREET_WAIT - 0.15, GREET_WAIT + 0.8, "554"),
    ]
    for i, (mode, greeting, source, lo, hi, why) in enumerate(cases):
        backend = harness.scripted_backend(env, mode, greeting=greeting)
        screen = env.smtpscreen(name=f"screen{i}", settings={
            "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
            "backend.connect_timeout": "2s"})
        run_case(screen, backend, source, f"backend {mode} ({greeting[:3]})", lo, hi, why, greeting)
        screen.stop()

    # After the deep tests: the 421 answers the RCPT.
    backend = harness.scripted_backend(env, "silent")
    screen = env.smtpscreen(name="deep", settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "backend.connect_timeout": "2s"}))
    c = harness.deep_client(screen, "127.0.0.13")
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    started = time.monotonic()
    reply = c.cmd("RCPT TO:<b@example.test>", timeout=8)
    t = time.monotonic() - started
    check(reply.code == 421 and reply.final.startswith("421 4.3.2"),
          f"deep, silent backend: RCPT expected '421 4.3.2 ...', got {reply.text!r}")
    check(CONNECT_TIMEOUT - 0.15 <= t <= CONNECT_TIMEOUT + 0.8,
          f"deep, silent backend: the 421 came {t:.2f}s after RCPT (connect_timeout {CONNECT_TIMEOUT}s)")
    c.check_closed(3, "deep, silent backend: after the 421")
    harness.check_one_disconnect(screen, "127.0.0.13", port, outcome="backend-unavailable")
    screen.stop()


harness.run(main)
