#!/usr/bin/env python3
"""A client can never pass XCLIENT, XFORWARD or a PROXY header through smtpscreen
(docs/design.md, "Hostile input"). The backend is the Postfix port that trusts XCLIENT from 127.0.0.1, the
proxy's address, so a relayed XCLIENT would be believed:
  - after handoff, EHLO does not offer XCLIENT/XFORWARD; 'XCLIENT ADDR=127.0.0.1' and
    'XFORWARD ADDR=127.0.0.1' fail, and the client still cannot relay: Postfix refuses
    RCPT to an outside domain and logs the real client address;
  - a PROXY line sent before the banner is a pregreet violation (listen.proxy_protocol is
    off): rejected, never handed off;
  - a PROXY line after a proxy-v2 handoff does not change the address Postfix sees."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.1/32")
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, name="xclient", settings={
        "backend.address": f"127.0.0.1:{pf.xclient_port}", "backend.handoff": "xclient"})

    c = harness.SmtpClient(screen.port, source="127.0.0.7")
    port = c.local_port
    c.expect(None, 220, r"backend\.test")
    ehlo = c.ehlo()
    for word in ("XCLIENT", "XFORWARD"):
        check(word not in ehlo.text.upper(), f"EHLO through smtpscreen offers {word}: {ehlo.text!r}")
    for attempt in ("XCLIENT ADDR=127.0.0.1 NAME=localhost", "XFORWARD ADDR=127.0.0.1",
                    "xclient addr=127.0.0.1 name=localhost"):
        reply = c.cmd(attempt)
        check(reply.code >= 500 or reply.code == 0,
              f"{attempt!r} through smtpscreen got {reply.text!r}; it must be refused")
    c.ehlo()
    c.expect("MAIL FROM:<spammer@example.org>", 250)
    c.expect("RCPT TO:<victim@outside.test>", 554, r"Relay access denied")
    c.expect("QUIT", 221)
    pf.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.7\]:" + str(port) + r": 554 5\.7\.1")
    check(not re.search(r"(client=|RCPT from )\S*\[127\.0\.0\.1\]", pf.log()),
          "Postfix saw the client as 127.0.0.1: the client's XCLIENT got through")
    screen.wait_for_log(harness.re_disconnect("127.0.0.7", port))

    # A PROXY line before the banner: a pregreet, not a header.
    c = harness.SmtpClient(screen.port, source="127.0.0.8")
    port = c.local_port
    c.send(harness.proxy_v1_header("127.0.0.1", 1234, "127.0.0.1", 25))
    screen.wait_for_log(harness.re_pregreet("127.0.0.8", port) + r"PROXY TCP4")
    greeting = c.read_reply(timeout=5)
    check("backend.test" not in greeting.text, f"a client that sent a PROXY line was handed off: {greeting.text!r}")
    c.drain(0.5)
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    c.expect("QUIT", 221)
    check("127.0.0.8" not in pf.log(), "Postfix saw the client that sent a PROXY line before the banner")

    # A PROXY v2 header before the banner (binary) is no better.
    c = harness.SmtpClient(screen.port, source="127.0.0.11")
    port = c.local_port
    c.send(harness.proxy_v2_header("127.0.0.1", 1234, "127.0.0.1", 25))
    screen.wait_for_log(harness.re_pregreet("127.0.0.11", port))
    c.close()
    check("127.0.0.11" not in pf.log(), "Postfix saw the client that sent a PROXY v2 header")

    # A PROXY line after a proxy-v2 handoff is just a bad command to the backend.
    v2 = env.smtpscreen(postfix=pf, dns=dns, name="proxy-v2", settings={
        "backend.address": f"127.0.0.1:{pf.proxy_port}", "backend.handoff": "proxy-v2"})
    c = harness.SmtpClient(v2.port, source="127.0.0.9")
    port = c.local_port
    c.expect(None, 220, r"backend\.test")
    reply = c.cmd("PROXY TCP4 127.0.0.1 127.0.0.1 1234 25")
    check(reply.code >= 500 or reply.code == 0, f"a PROXY line after handoff got {reply.text!r}")
    if not c.wait_closed(0.3):
        c.ehlo()
        c.expect("MAIL FROM:<spammer@example.org>", 250)
        c.expect("RCPT TO:<victim@outside.test>", 554, r"Relay access denied")
        c.expect("QUIT", 221)
        pf.wait_for_log(r"RCPT from unknown\[127\.0\.0\.9\]:" + str(port) + r": 554 5\.7\.1")
    check(not re.search(r"(client=|RCPT from )\S*\[127\.0\.0\.1\]", pf.log()),
          "Postfix saw a client as 127.0.0.1")
    screen.stop()
    v2.stop()


harness.run(main)
