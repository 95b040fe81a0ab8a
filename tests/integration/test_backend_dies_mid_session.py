#!/usr/bin/env python3
"""A backend that dies in the middle of a message (closes instead of answering the end
of data) makes the client see the connection close (or an error), never a 250 for mail
the backend did not accept (docs/design.md, step 8); the session still ends with one DISCONNECT."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    backend = harness.scripted_backend(env, "close-at-dot")
    screen = env.smtpscreen(settings={"backend.address": f"127.0.0.1:{backend.port}",
                                      "backend.handoff": "proxy-v2"})
    c = harness.SmtpClient(screen.port, source="127.0.0.7")
    port = c.local_port
    c.expect(None, 220)
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250)
    c.expect("DATA", 354)
    c.send(harness.message_text("dies") + ".\r\n")
    closed = c.wait_closed(5)
    seen = c.buf.decode(errors="replace")
    check(not seen.startswith("250"), f"the client got {seen!r} for a message the backend never accepted")
    check(closed or seen[:1] in ("4", "5"), f"the client neither saw the close nor an error: {seen!r}")
    screen.wait_for_log(harness.re_disconnect("127.0.0.7", port))
    lines = [ln for ln in screen.log_lines() if f"DISCONNECT [127.0.0.7]:{port}" in ln]
    check(len(lines) == 1, f"expected exactly one DISCONNECT line for the session, got {lines}")
    hdr = harness.parse_proxy_v2(backend.connections[0]["data"])
    check(hdr[0] == "127.0.0.7" and hdr[1] == port, f"PROXY v2 header names {hdr[:2]}, expected 127.0.0.7:{port}")
    screen.stop()


harness.run(main)
