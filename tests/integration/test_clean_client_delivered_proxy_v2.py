#!/usr/bin/env python3
"""A clean client (listed nowhere, patient through the greet wait) is handed off with
backend.handoff = proxy-v2: it gets '220-' at once, the backend's 220 after greet.wait,
its message arrives in the private Postfix's Maildir, smtpscreen logs CONNECT, PASS NEW
and DISCONNECT, and Postfix logs the client's real address and port (from the PROXY v2
header), not 127.0.0.1. Two clients: raw bytes from 127.0.0.7 and swaks from 127.0.0.8."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={
        "backend.address": f"127.0.0.1:{pf.proxy_port}",
        "backend.handoff": "proxy-v2",
    })
    s = harness.clean_session(screen, pf, source="127.0.0.7")
    screen.wait_for_log(harness.re_connect("127.0.0.7", s.port, to=("127.0.0.1", screen.port)))
    check(s.first_line == "220-screen.test ESMTP",
          f"first banner line must be greet.banner ('220-screen.test ESMTP'), got {s.first_line!r}")

    marker = harness.unique_marker("swaks")
    r = harness.swaks(screen.port, "127.0.0.8", marker)
    check(r.returncode == 0, f"swaks through smtpscreen failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    m = screen.wait_for_log(r"PASS NEW \[127\.0\.0\.8\]:(\d+)")
    port = m.group(1)
    screen.wait_for_log(harness.re_disconnect("127.0.0.8", port))
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.8", port))
    check("client=unknown[127.0.0.1]" not in pf.log(),
          "Postfix logged a message from 127.0.0.1: the handoff hid the real client")
    screen.stop()


harness.run(main)
