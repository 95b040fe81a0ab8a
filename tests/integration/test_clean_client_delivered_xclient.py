#!/usr/bin/env python3
"""A clean client is handed off with backend.handoff = xclient to the Postfix port that
trusts XCLIENT from 127.0.0.1: the client sees the backend's 220 (the one that answers
XCLIENT), EHLO through the proxy does not offer XCLIENT/XFORWARD, the message arrives,
and Postfix logs the real client address and port (XCLIENT ADDR/PORT). Also with swaks
(--local-interface 127.0.0.8)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.1/32")
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={
        "backend.address": f"127.0.0.1:{pf.xclient_port}",
        "backend.handoff": "xclient",
    })
    harness.clean_session(screen, pf, source="127.0.0.7")

    marker = harness.unique_marker("swaks")
    r = harness.swaks(screen.port, "127.0.0.8", marker)
    check(r.returncode == 0, f"swaks through smtpscreen failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    check("XCLIENT" not in r.stdout, f"swaks saw XCLIENT offered through the proxy:\n{r.stdout}")
    m = screen.wait_for_log(r"PASS NEW \[127\.0\.0\.8\]:(\d+)")
    port = m.group(1)
    screen.wait_for_log(harness.re_disconnect("127.0.0.8", port))
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.8", port))
    check("client=unknown[127.0.0.1]" not in pf.log(),
          "Postfix logged a message from 127.0.0.1: the handoff hid the real client")
    screen.stop()


harness.run(main)
