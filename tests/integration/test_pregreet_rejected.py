#!/usr/bin/env python3
"""A client that talks before the greet wait ends (a spambot that does not wait for the
banner) is a pregreet violation (docs/design.md, step 4 and "Log lines"):
  - greet.action = enforce: smtpscreen logs PREGREET, finishes the greeting itself
    (never the backend's 220), answers EHLO and MAIL, rejects every RCPT with
    '550 5.5.1 Protocol error' and logs 'NOQUEUE: reject: RCPT from ...', never hands
    off (Postfix never sees the client) and does not cache a pass;
  - greet.action = drop: '521 5.5.1 Protocol error' and close.
In both cases the mail never arrives."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    enforce = env.smtpscreen(postfix=pf, dns=dns, name="enforce", settings={
        "greet.action": "enforce", "greet.wait": "1s"})
    drop = env.smtpscreen(postfix=pf, dns=dns, name="drop", settings={
        "greet.action": "drop", "greet.wait": "2s"})

    # --- enforce
    c = harness.SmtpClient(enforce.port, source="127.0.0.9")
    port = c.local_port
    first = c.read_line(timeout=2)
    check(first.startswith("220-"), f"first banner line: expected '220-', got {first!r}")
    c.send("EHLO bot.example\r\n")           # before the greet wait ends
    enforce.wait_for_log(harness.re_connect("127.0.0.9", port, to=("127.0.0.1", enforce.port)))
    enforce.wait_for_log(harness.re_pregreet("127.0.0.9", port) + r"EHLO bot\.example")
    greeting = c.read_reply(timeout=5)
    check(greeting.code == 220, f"enforce: the greeting must still end with 220, got {greeting.text!r}")
    check("backend.test" not in greeting.text,
          f"enforce: a pregreet client got the backend's banner (it was handed off): {greeting.text!r}")
    c.drain(0.5)                              # whatever answers the early EHLO
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    c.expect("RCPT TO:<other@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    data = c.cmd("DATA")
    check(data.code >= 500, f"DATA after every RCPT was rejected must fail, got {data.text!r}")
    c.expect("QUIT", 221)
    c.check_closed(5, "after QUIT")
    enforce.wait_for_log(harness.re_noqueue(
        "127.0.0.9", r"550 5\.5\.1 Protocol error; from=<bot@example\.org>, to=<user@example\.test>, "
                     r"proto=ESMTP, helo=<bot\.example>", port))
    enforce.wait_for_log(harness.re_disconnect("127.0.0.9", port))
    enforce.check_no_log(harness.re_pass_new("127.0.0.9"))
    check("127.0.0.9" not in pf.log(), "Postfix saw the pregreet client: it was handed off")

    # --- enforce, a bot that pipelines a whole transaction without waiting
    marker = harness.unique_marker("pregreet")
    c = harness.SmtpClient(enforce.port, source="127.0.0.11")
    port = c.local_port
    c.send("EHLO bot.example\r\nMAIL FROM:<bot@example.org>\r\nRCPT TO:<user@example.test>\r\n"
           "DATA\r\n" + harness.message_text(marker) + ".\r\nQUIT\r\n")
    enforce.wait_for_log(harness.re_pregreet("127.0.0.11", port))
    # Like postscreen, the proxy may discard what was sent before the greeting or answer
    # it; either way none of it reaches the backend and nothing is queued.
    seen = c.drain(quiet=1.5, limit=5).decode(errors="replace")
    check("backend.test" not in seen, f"the pipelining bot reached the backend: {seen!r}")
    check("354" not in seen and "queued" not in seen, f"the pregreet bot's DATA was accepted: {seen!r}")
    if not c.eof:
        c.send("QUIT\r\n")
        c.check_closed(5, "pipelining pregreet bot after QUIT")
    enforce.wait_for_log(harness.re_disconnect("127.0.0.11", port))

    # --- drop
    c = harness.SmtpClient(drop.port, source="127.0.0.12")
    port = c.local_port
    c.send("HELO bot.example\r\n")
    reply = c.read_reply(timeout=5)
    check(reply.code == 521 and reply.final.startswith("521 5.5.1 Protocol error"),
          f"drop: expected '521 5.5.1 Protocol error', got {reply.text!r}")
    c.check_closed(3, "drop after 521")
    drop.wait_for_log(harness.re_connect("127.0.0.12", port))
    drop.wait_for_log(harness.re_pregreet("127.0.0.12", port) + r"HELO bot\.example")
    drop.wait_for_log(harness.re_disconnect("127.0.0.12", port))

    pf.check_not_delivered(marker)
    for ip in ("127.0.0.11", "127.0.0.12"):
        check(f"[{ip}]" not in pf.log(), f"Postfix saw pregreet client {ip}: it was handed off")
    enforce.stop()
    drop.stop()


harness.run(main)
