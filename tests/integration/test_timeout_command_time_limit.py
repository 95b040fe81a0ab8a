#!/usr/bin/env python3
"""limits.command_time_limit (smtpscreen.ini(5), issue 6) while smtpscreen speaks SMTP itself:
the most time one command line may take, from its first byte (or from our last reply)
to its end. 2s here.
  - deep tests, a client that says nothing after the greeting: '421 4.4.2 <host> Error:
    timeout exceeded' about 2s after the 220, 'COMMAND TIME LIMIT from [ip]:port', one
    'DISCONNECT ... timeout';
  - deep tests, a slow drip (one byte every 0.25s of a 26-byte EHLO, 6.5s in all): the
    421 comes about 2s after the first byte; the bytes that keep arriving do not
    restart the clock;
  - deep tests, a line started after a complete one ('EHLO x' CRLF then 'MA'): 2s from
    our reply to the EHLO;
  - deep tests, each command well within the limit but the session longer than it
    (1.4s between commands): no timeout, the client passes and is handed off;
  - the enforce dialog (a pregreet client): the same 421 when it goes quiet."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

LIMIT = 2.0


def expect_timeout(screen, c, started, what, lo=LIMIT - 0.2, hi=LIMIT + 0.9):
    reply = c.read_reply(timeout=LIMIT + 5)
    t = time.monotonic() - started
    check(reply.code == 421 and "4.4.2" in reply.final and "timeout exceeded" in reply.final,
          f"{what}: expected '421 4.4.2 ... Error: timeout exceeded', got {reply.text!r}")
    check(lo <= t <= hi, f"{what}: the 421 came {t:.2f}s after the clock started (limit {LIMIT}s)")
    c.check_closed(3, f"{what}: after the 421")
    return reply, t


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    settings = harness.deep_settings({
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "limits.command_time_limit": "2s", "cache.backend": "memory", "cache.path": None})
    screen = env.smtpscreen(settings=settings)

    # Silence after the greeting.
    c = harness.deep_client(screen, "127.0.0.7")
    port = c.local_port
    reply, t = expect_timeout(screen, c, time.monotonic(), "silent deep-tested client")
    screen.wait_for_log(rf"COMMAND TIME LIMIT from {harness.ip_port('127.0.0.7', port)}")
    harness.check_one_disconnect(screen, "127.0.0.7", port, outcome="timeout")
    harness.log(f"silent: {reply.final!r} after {t:.2f}s")

    # A slow drip: one byte every 0.25s.
    c = harness.deep_client(screen, "127.0.0.8")
    port = c.local_port
    line = b"EHLO drip.client.example\r\n"
    started = time.monotonic()
    sent = 0
    got = b""
    for i in range(len(line)):
        try:
            c.sock.sendall(line[i:i + 1])
        except OSError:
            break
        sent += 1
        got += c.drain(quiet=0.25, limit=0.25)
        if b"421" in got or c.eof:
            break
    t = time.monotonic() - started
    got += c.drain(quiet=0.5, limit=3)
    text = got.decode(errors="replace")
    check(text.startswith("421 4.4.2") and "timeout exceeded" in text,
          f"slow drip: expected the 421 timeout, got {text!r} after {sent} of {len(line)} bytes")
    check(LIMIT - 0.2 <= t <= LIMIT + 0.9 and sent < len(line),
          f"slow drip: the 421 came {t:.2f}s after the first byte, {sent} of {len(line)} bytes sent: "
          f"the drip restarted the clock")
    harness.check_one_disconnect(screen, "127.0.0.8", port, outcome="timeout")
    harness.log(f"slow drip: 421 after {t:.2f}s and {sent} bytes")

    # A line started after a complete one.
    c = harness.deep_client(screen, "127.0.0.9")
    port = c.local_port
    c.send("EHLO client.example.org\r\n")
    c.read_reply(timeout=3)
    started = time.monotonic()
    c.send("MA")
    expect_timeout(screen, c, started, "partial second line")
    harness.check_one_disconnect(screen, "127.0.0.9", port, outcome="timeout")

    # Each command in time, the whole dialog longer than the limit: handed off.
    c = harness.deep_client(screen, "127.0.0.11")
    port = c.local_port
    for cmd, code in (("EHLO client.example.org", 250), ("MAIL FROM:<a@example.org>", 250),
                      ("RCPT TO:<b@example.test>", 250)):
        time.sleep(1.4)
        c.expect(cmd, code)
    c.expect("DATA", 354)
    c.send(harness.message_text("slow-but-fine") + ".\r\n")
    c.expect(None, 250)
    c.expect("QUIT", 221)
    harness.check_one_disconnect(screen, "127.0.0.11", port, outcome="handoff")
    check(len(backend.messages()) == 1, f"the backend got {len(backend.messages())} messages, expected 1")

    # The enforce dialog (pregreet).
    c = harness.SmtpClient(screen.port, source="127.0.0.12", timeout=10)
    port = c.local_port
    c.send("EHLO early.bird\r\n")
    greeting = c.read_reply(timeout=5)
    check(greeting.code == 220, f"pregreet client: expected the final 220, got {greeting.text!r}")
    started = time.monotonic()
    c.drain(quiet=0.3, limit=0.5)
    expect_timeout(screen, c, started, "quiet pregreet client (enforce)", hi=LIMIT + 1.2)
    harness.check_one_disconnect(screen, "127.0.0.12", port, outcome="timeout")
    screen.stop()


harness.run(main)
