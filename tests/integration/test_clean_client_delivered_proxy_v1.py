#!/usr/bin/env python3
"""A clean client is handed off with backend.handoff = proxy-v1 (the text PROXY line)
to Postfix's haproxy port: smtplib from 127.0.0.7 sends a message, it arrives, and
Postfix logs 127.0.0.7 with the client's own source port."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={
        "backend.address": f"127.0.0.1:{pf.proxy_port}",
        "backend.handoff": "proxy-v1",
    })
    # Raw client first: banner timing, log lines, Postfix's view of the port.
    harness.clean_session(screen, pf, source="127.0.0.7")

    # smtplib, the way a Python MTA client would talk to it.
    marker = harness.unique_marker("smtplib")
    started = time.monotonic()
    smtp = harness.smtplib_client(screen.port, source="127.0.0.9")
    waited = time.monotonic() - started
    port = smtp.sock.getsockname()[1]
    check(waited >= 0.85, f"smtplib got the whole greeting after {waited:.2f}s, before greet.wait (1s)")
    code, _ = smtp.ehlo("client.example.org")
    check(code == 250, f"EHLO through smtpscreen: {code}")
    refused = smtp.sendmail("sender@example.org", ["user@example.test"],
                            harness.message_text(marker))
    check(not refused, f"recipients refused: {refused}")
    code, _ = smtp.quit()
    check(code == 221, f"QUIT: {code}")
    screen.wait_for_log(harness.re_pass_new("127.0.0.9", port))
    screen.wait_for_log(harness.re_disconnect("127.0.0.9", port))
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.9", port))
    check(not re.search(r"client=unknown\[127\.0\.0\.1\]", pf.log()),
          "Postfix logged a message from 127.0.0.1: the handoff hid the real client")
    screen.stop()


harness.run(main)
