#!/usr/bin/env python3
"""A backend that fails a client that was already handed off (docs/design.md, step 8, issue 6):
the client sees 4xx/5xx or a closed connection, never a 250 for a message the backend
did not accept, and the session ends with exactly one DISCONNECT line.
  - refuses connections (nothing listens): 421 4.3.2 at the end of the greet wait;
    after the deep tests the same 421 answers the RCPT;
  - greets, then closes at once: the client gets the backend's 220, then a close;
  - closes (FIN) in the middle of DATA, after the first message bytes;
  - resets (RST) in the middle of DATA;
  - closes instead of answering the end of data;
each of the last three both after a plain handoff and after a deep-tested handoff
(where smtpscreen reads the DATA itself for the smuggling defence)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BIG_BODY = ["line %05d of a message that dies in the middle " % i + "x" * 40 for i in range(3000)]


def screen_for(env, name, port, deep):
    settings = {"backend.address": f"127.0.0.1:{port}", "greet.wait": "1s",
                "backend.connect_timeout": "2s", "backend.idle_timeout": "5s"}
    if deep:
        settings = harness.deep_settings(settings)
    return env.smtpscreen(name=name, settings=settings)


def start_transaction(screen, source, deep):
    if deep:
        c = harness.deep_client(screen, source, timeout=10)
    else:
        c = harness.SmtpClient(screen.port, source=source, timeout=10)
        reply = c.read_greeting()
        check(reply.code == 220 and "scripted.test" in reply.final, f"expected the backend's 220, got {reply.text!r}")
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 250)
    c.expect("DATA", 354)
    return c


def message_dies(env, mode, deep, source):
    what = f"backend {mode}, {'deep-tested' if deep else 'plain'} handoff"
    backend = harness.scripted_backend(env, mode)
    screen = screen_for(env, f"{mode}-{'deep' if deep else 'plain'}", backend.port, deep)
    c = start_transaction(screen, source, deep)
    port = c.local_port
    text = harness.message_text(f"dies-{mode}") + "\r\n".join(BIG_BODY) + "\r\n.\r\n"
    data = text.encode()
    sent, how = harness.pump_bytes(c.sock, len(data), pattern=data, chunk=len(data), stall=3, limit=15)
    closed = c.wait_closed(8)
    seen = c.buf.decode(errors="replace")
    check(closed, f"{what}: the client's connection was not closed; it got {seen!r}")
    check(not any(ln.startswith("250") for ln in seen.splitlines()),
          f"{what}: the client got a 250 for a message the backend never accepted: {seen!r}")
    check(not backend.messages(), f"{what}: the backend recorded a message?")
    outcome, _ = harness.check_one_disconnect(screen, source, port)
    harness.log(f"{what}: client sent {sent} bytes ({how}), saw {seen!r}, outcome {outcome}")
    screen.stop()
    return seen, outcome


def main(env):
    results = {}
    # Refused: plain and deep.
    dead = harness.free_port()
    screen = screen_for(env, "refused", dead, deep=False)
    c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=10)
    port = c.local_port
    reply = c.read_greeting()
    t = reply.t_final
    check(reply.code == 421 and reply.final.startswith("421 4.3.2"), f"refused: expected 421 4.3.2, got {reply.text!r}")
    check(t < 2.0, f"refused: the 421 took {t:.2f}s (greet.wait 1s)")
    c.check_closed(3, "refused: after the 421")
    harness.check_one_disconnect(screen, "127.0.0.7", port, outcome="backend-unavailable")
    screen.stop()
    deep = screen_for(env, "refused-deep", dead, deep=True)
    c = harness.deep_client(deep, "127.0.0.8")
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 421, r"^421 4\.3\.2")
    c.check_closed(3, "refused, deep: after the 421")
    harness.check_one_disconnect(deep, "127.0.0.8", port, outcome="backend-unavailable")
    deep.stop()

    # Greets, then closes.
    backend = harness.scripted_backend(env, "greet-then-close")
    screen = screen_for(env, "greet-close", backend.port, deep=False)
    c = harness.SmtpClient(screen.port, source="127.0.0.9", timeout=10)
    port = c.local_port
    reply = c.read_greeting()
    closed = c.wait_closed(5)
    check(closed, f"greet-then-close: the client was not closed; got {reply.text!r} {c.buf!r}")
    results["greet-then-close"] = (reply.final, harness.check_one_disconnect(screen, "127.0.0.9", port)[0])
    harness.log(f"greet-then-close: {reply.text!r}, then closed")
    screen.stop()

    n = 11
    for mode in ("close-mid-data", "reset-mid-data", "close-at-dot"):
        for is_deep in (False, True):
            results[(mode, is_deep)] = message_dies(env, mode, is_deep, f"127.0.0.{n}")
            n += 1
    for k, v in results.items():
        harness.log(f"{k}: {v}")


harness.run(main)
