#!/usr/bin/env python3
"""deep.bare_newline (docs/design.md, step 6 and "Log lines"): a command line that ends in a bare LF instead
of CRLF fails the test; smtpscreen logs 'BARE NEWLINE from [ip]:port after CMD' and
applies deep.action:
  - drop: 'EHLO x\\n' as the first command gets '521 5.5.1 Protocol error' and close;
    a bare LF after a good EHLO ('MAIL FROM:<a@b>\\n') is logged 'after EHLO';
  - enforce: the session goes on with smtpscreen, the RCPT gets '550 5.5.1 Protocol
    error' and a NOQUEUE line; never handed off;
  - ignore: logged, handed off at the RCPT all the same (the replay to Postfix uses
    CRLF), the message arrives, no pass is cached.
The same client with CRLF line ends passes (control)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def re_bare(ip, port, after):
    return rf"BARE NEWLINE from {harness.ip_port(ip, port)} after {after}$"


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    drop = env.smtpscreen(postfix=pf, dns=dns, name="drop", settings=harness.deep_settings({
        "deep.action": "drop", "greet.wait": "1s"}))
    enforce = env.smtpscreen(postfix=pf, dns=dns, name="enforce", settings=harness.deep_settings({
        "deep.action": "enforce", "greet.wait": "1s"}))
    ignore = env.smtpscreen(postfix=pf, dns=dns, name="ignore", settings=harness.deep_settings({
        "deep.action": "ignore", "greet.wait": "1s"}))
    bots = []

    # --- drop: the first command
    src = "127.0.0.57"
    c = harness.deep_client(drop, src)
    port = c.local_port
    c.send("EHLO x\n")
    reply = c.read_reply()
    check(reply.final.startswith("521 5.5.1 Protocol error"),
          f"drop: 'EHLO x\\n' must get '521 5.5.1 Protocol error', got {reply.text!r}")
    c.check_closed(3, "drop: after the 521")
    drop.wait_for_log(re_bare(src, port, "CONNECT"))
    drop.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} dropped")
    bots.append(src)

    # --- drop: after a good EHLO
    src = "127.0.0.58"
    c = harness.deep_client(drop, src)
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    c.send("MAIL FROM:<a@b>\n")
    c.expect(None, 521, r"^521 5\.5\.1 Protocol error")
    c.check_closed(3, "drop: after the 521")
    drop.wait_for_log(re_bare(src, port, "EHLO"))
    bots.append(src)

    # --- enforce
    src = "127.0.0.59"
    c = harness.deep_client(enforce, src)
    port = c.local_port
    c.send("EHLO x\n")
    reply = c.read_reply()
    check(reply.code == 250, f"enforce: 'EHLO x\\n' is still answered (250), got {reply.text!r}")
    enforce.wait_for_log(re_bare(src, port, "CONNECT"))
    c.expect("MAIL FROM:<a@b>", 250)
    c.expect("RCPT TO:<c@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    data = c.cmd("DATA")
    check(data.code >= 500, f"enforce: DATA must fail, got {data.text!r}")
    c.expect("QUIT", 221)
    c.check_closed(5, "enforce: after QUIT")
    enforce.wait_for_log(harness.re_noqueue(
        src, r"550 5\.5\.1 Protocol error; from=<a@b>, to=<c@example\.test>, proto=ESMTP, helo=<x>$", port))
    enforce.wait_for_log(harness.re_disconnect(src, port))
    enforce.check_no_log(harness.re_pass_new(src))
    bots.append(src)

    # --- ignore: logged, handed off, delivered, no pass cached
    src = "127.0.0.60"
    marker = harness.unique_marker("barelf-ignore")
    c = harness.deep_client(ignore, src)
    port = c.local_port
    c.send("EHLO client.example.org\n")
    c.expect(None, 250)
    ignore.wait_for_log(re_bare(src, port, "CONNECT"))
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")   # Postfix's answer
    c.expect("DATA", 354)
    c.send(harness.message_text(marker) + ".\r\n")
    c.expect(None, 250, r"queued as")
    c.expect("QUIT", 221)
    c.check_closed(5, "ignore: after QUIT")
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(src, port))
    ignore.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} handoff")
    ignore.check_no_log(harness.re_pass_new(src))
    c = harness.deep_client(ignore, src)   # no cached pass: tested again
    port2 = c.local_port
    c.expect("QUIT", 221)
    ignore.wait_for_log(harness.re_disconnect(src, port2))
    ignore.check_no_log(harness.re_pass_old(src))

    # --- control: the same dialogue with CRLF passes the enforce screen
    src = "127.0.0.61"
    ok = harness.unique_marker("crlf-control")
    c = harness.deep_client(enforce, src)
    c.send_mail(ok, helo="x", mail_from="a@example.org")
    c.check_closed(5, "control: after QUIT")
    enforce.wait_for_log(harness.re_pass_new(src))
    pf.wait_for_delivery(ok)
    for s in (drop, enforce, ignore):
        s.check_no_log(r"BARE NEWLINE from " + harness.ip_port("127.0.0.61"))

    for ip in bots:
        check(f"[{ip}]" not in pf.log(), f"Postfix saw bare-LF client {ip}: it was handed off")
    for s in (drop, enforce, ignore):
        s.stop()


harness.run(main)
