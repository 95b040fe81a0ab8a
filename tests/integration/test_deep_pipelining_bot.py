#!/usr/bin/env python3
"""deep.pipelining (docs/design.md, step 6 and "Log lines"): smtpscreen never offers PIPELINING, so a client
that sends a command before the reply to the previous one is a spambot:
  - 'EHLO x\\r\\nMAIL FROM:<a@b>\\r\\nRCPT TO:<c@example.test>\\r\\n' in one write logs
    'COMMAND PIPELINING from [ip]:port after EHLO: MAIL FROM:<a@b>...';
    deep.action = enforce: EHLO and MAIL are answered, the RCPT gets
    '550 5.5.1 Protocol error' and a 'NOQUEUE: reject: RCPT from ...' line, the client is
    never handed off (Postfix never sees it) and no pass is cached;
    deep.action = drop: '521 5.5.1 Protocol error' and close;
  - a bot that talks properly up to MAIL and then sends RCPT + DATA + the message in one
    write is caught at that RCPT: it is rejected, not handed off with the rest queued;
  - a client that passed (PASS OLD next time) sees the backend's EHLO reply, which offers
    PIPELINING, and may pipeline (RFC 2920): no violation, the message arrives.
The mail of the bots never arrives."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BOT_BURST = "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@example.test>\r\n"


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    enforce = env.smtpscreen(postfix=pf, dns=dns, name="enforce", settings=harness.deep_settings({
        "deep.action": "enforce", "greet.wait": "1s"}))
    drop = env.smtpscreen(postfix=pf, dns=dns, name="drop", settings=harness.deep_settings({
        "deep.action": "drop", "greet.wait": "1s"}))

    # --- enforce: the burst from the brief
    src = "127.0.0.44"
    c = harness.deep_client(enforce, src)
    port = c.local_port
    c.send(BOT_BURST)
    ehlo = c.read_reply()
    check(ehlo.code == 250, f"enforce: the pipelined EHLO must still be answered 250, got {ehlo.text!r}")
    check("PIPELINING" not in ehlo.text.upper(), f"smtpscreen offered PIPELINING: {ehlo.text!r}")
    mail = c.read_reply()
    check(mail.code == 250, f"enforce: the pipelined MAIL must be answered 250, got {mail.text!r}")
    rcpt = c.read_reply()
    check(rcpt.final.startswith("550 5.5.1 Protocol error"),
          f"enforce: the pipelined RCPT must get '550 5.5.1 Protocol error', got {rcpt.text!r}")
    enforce.wait_for_log(
        rf"COMMAND PIPELINING from {harness.ip_port(src, port)} after EHLO: MAIL FROM:<a@b>\\r\\n"
        rf"RCPT TO:<c@example\.test>\\r\\n$")
    enforce.wait_for_log(harness.re_noqueue(
        src, r"550 5\.5\.1 Protocol error; from=<a@b>, to=<c@example\.test>, proto=ESMTP, helo=<x>$", port))
    # It stays refused: another RCPT, DATA.
    c.expect("RCPT TO:<user@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    data = c.cmd("DATA")
    check(data.code >= 500, f"enforce: DATA after every RCPT was refused must fail, got {data.text!r}")
    c.expect("QUIT", 221)
    c.check_closed(5, "enforce: after QUIT")
    enforce.wait_for_log(harness.re_disconnect(src, port))
    enforce.check_no_log(harness.re_pass_new(src))
    # No pass was cached: the next connection is tested again (smtpscreen's own greeting).
    c = harness.deep_client(enforce, src)
    port2 = c.local_port
    c.expect("QUIT", 221)
    enforce.wait_for_log(harness.re_disconnect(src, port2))
    enforce.check_no_log(harness.re_pass_old(src))

    # --- enforce: proper up to MAIL, then RCPT + DATA + message in one write
    src2 = "127.0.0.45"
    marker = harness.unique_marker("pipelined-rcpt")
    c = harness.deep_client(enforce, src2)
    port = c.local_port
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.send("RCPT TO:<user@example.test>\r\nDATA\r\n" + harness.message_text(marker) + ".\r\nQUIT\r\n")
    rcpt = c.read_reply()
    check(rcpt.final.startswith("550 5.5.1 Protocol error"),
          f"enforce: a RCPT with DATA pipelined behind it must get '550 5.5.1 Protocol error' "
          f"(never handed off), got {rcpt.text!r}")
    seen = c.drain(quiet=1.0, limit=5).decode(errors="replace")
    check("354" not in seen and "queued" not in seen and "backend.test" not in seen,
          f"enforce: the pipelining bot's DATA was accepted or reached the backend: {seen!r}")
    enforce.wait_for_log(rf"COMMAND PIPELINING from {harness.ip_port(src2, port)} after RCPT: DATA\\r\\n")
    enforce.wait_for_log(harness.re_noqueue(
        src2, r"550 5\.5\.1 Protocol error; from=<bot@example\.org>, to=<user@example\.test>, "
              r"proto=ESMTP, helo=<bot\.example>", port))
    if not c.eof:
        c.close()
    enforce.wait_for_log(harness.re_disconnect(src2, port))
    enforce.check_no_log(harness.re_pass_new(src2))

    # --- drop
    src3 = "127.0.0.46"
    c = harness.deep_client(drop, src3)
    port = c.local_port
    c.send(BOT_BURST)
    reply = c.read_reply()
    check(reply.final.startswith("521 5.5.1 Protocol error"),
          f"drop: the pipelining bot must get '521 5.5.1 Protocol error' at once, got {reply.text!r}")
    c.check_closed(3, "drop: after 521")
    rest = c.buf.decode(errors="replace")
    check("250" not in rest and "550" not in rest, f"drop: replies after the 521: {rest!r}")
    drop.wait_for_log(rf"COMMAND PIPELINING from {harness.ip_port(src3, port)} after EHLO: MAIL FROM:<a@b>")
    drop.wait_for_log(rf"DISCONNECT {harness.ip_port(src3, port)} dropped")
    drop.check_no_log(harness.re_pass_new(src3))

    # --- a client that passed may pipeline once PIPELINING is offered (by the backend)
    good = "127.0.0.47"
    first = harness.unique_marker("good-first")
    c = harness.deep_client(enforce, good)
    c.send_mail(first)
    c.check_closed(5, "good client after QUIT")
    enforce.wait_for_log(harness.re_pass_new(good))
    pf.wait_for_delivery(first)
    marker2 = harness.unique_marker("good-pipelined")
    c = harness.SmtpClient(enforce.port, source=good)
    port = c.local_port
    c.expect(None, 220, r"^220 backend\.test ESMTP")
    ehlo = c.ehlo()
    check(re.search(r"^250[- ]PIPELINING", ehlo.text, re.M),
          f"the backend's EHLO reply after PASS OLD must offer PIPELINING: {ehlo.text!r}")
    c.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n")
    for what, code in (("MAIL", 250), ("RCPT", 250), ("DATA", 354)):
        r = c.read_reply()
        check(r.code == code, f"PASS OLD pipelined {what}: expected {code}, got {r.text!r}")
    c.send(harness.message_text(marker2) + ".\r\nQUIT\r\n")
    c.expect(None, 250, r"queued")
    c.expect(None, 221)
    c.check_closed(5, "PASS OLD pipelining client after QUIT")
    enforce.wait_for_log(harness.re_pass_old(good, port))
    pf.wait_for_delivery(marker2)
    enforce.check_no_log(rf"COMMAND PIPELINING from {harness.ip_port(good)}")

    pf.check_not_delivered(marker)
    for ip in (src, src2, src3):
        check(f"[{ip}]" not in pf.log(), f"Postfix saw pipelining bot {ip}: it was handed off")
    enforce.stop()
    drop.stop()


harness.run(main)
