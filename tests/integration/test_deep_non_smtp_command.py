#!/usr/bin/env python3
"""deep.non_smtp_command (docs/design.md, step 6 and "Log lines"): after smtpscreen's own greeting, a client
that sends a command from deep.forbidden_commands (default CONNECT, GET, POST, USER,
PASS), a line that looks like an HTTP/mail header ('Host: x') or one that does not start
with a letter (a TLS ClientHello in clear) is not an SMTP client.
smtpscreen logs 'NON-SMTP COMMAND from [ip]:port after CMD: text' and applies
deep.action:
  - drop: '521 5.5.1 Protocol error' and close (GET / HTTP/1.0, CONNECT host:25 HTTP/1.0,
    Host: x);
  - enforce: the session goes on with smtpscreen, every RCPT gets '550 5.5.1 Protocol
    error' plus a NOQUEUE line, never handed off (a whole HTTP request, too);
  - ignore: logged, the client is still handed off at its RCPT and delivers, but no
    pass is cached (the next connection is tested again, no PASS OLD);
  - the list is configurable: with deep.forbidden_commands = HEAD, GET a 'HEAD' line fails.
No mail of a failed client arrives; Postfix never sees one."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def re_non_smtp(ip, port, after, text):
    return rf"NON-SMTP COMMAND from {harness.ip_port(ip, port)} after {after}: {text}"


def dropped(screen, c, line, log_text):
    """c has read smtpscreen's greeting; line is its first command."""
    src, port = c.source, c.local_port
    c.send(line)
    reply = c.read_reply()
    check(reply.final.startswith("521 5.5.1 Protocol error"),
          f"drop: {line!r} must get '521 5.5.1 Protocol error', got {reply.text!r}")
    c.check_closed(3, f"drop: after the 521 to {line!r}")
    screen.wait_for_log(re_non_smtp(src, port, "CONNECT", log_text))
    screen.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} dropped")
    return port


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    drop = env.smtpscreen(postfix=pf, dns=dns, name="drop", settings=harness.deep_settings({
        "deep.action": "drop", "greet.wait": "1s"}))
    enforce = env.smtpscreen(postfix=pf, dns=dns, name="enforce", settings=harness.deep_settings({
        "deep.action": "enforce", "greet.wait": "1s"}))
    ignore = env.smtpscreen(postfix=pf, dns=dns, name="ignore", settings=harness.deep_settings({
        "deep.action": "ignore", "greet.wait": "1s"}))
    custom = env.smtpscreen(postfix=pf, dns=dns, name="custom", settings=harness.deep_settings({
        "deep.action": "drop", "greet.wait": "1s", "deep.forbidden_commands": "HEAD, GET"}))
    bots = []

    # --- drop (the clients connect together so that their greet waits overlap)
    ips = ["127.0.0.48", "127.0.0.49", "127.0.0.50", "127.0.0.51", "127.0.0.103", "127.0.0.52"]
    c48, c49, c50, c51, c103, c52 = harness.deep_clients(drop, ips)
    dropped(drop, c48, "GET / HTTP/1.0\r\n", r"GET / HTTP/1\.0$")
    dropped(drop, c49, "CONNECT host:25 HTTP/1.0\r\n", r"CONNECT host:25 HTTP/1\.0$")
    dropped(drop, c50, "Host: x\r\n", r"Host: x$")
    dropped(drop, c51, "post /cgi-bin/x HTTP/1.1\r\n", r"post /cgi-bin/x HTTP/1\.1$")
    # A line that does not start with a letter: a TLS ClientHello sent in clear, logged
    # escaped (a client cannot put control bytes into the log).
    dropped(drop, c103, b"\x16\x03\x01\x00\xa5\x01\r\n", r"\\x16\\x03\\x01\\x00\\xa5\\x01$")
    bots += ips

    # After a good command, the log names it.
    src, c = "127.0.0.52", c52
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    c.send("USER root\r\n")
    c.expect(None, 521, r"^521 5\.5\.1 Protocol error")
    c.check_closed(3, "drop: after USER")
    drop.wait_for_log(re_non_smtp(src, port, "EHLO", r"USER root$"))

    # --- enforce: a whole HTTP request, then the bot tries SMTP anyway
    src = "127.0.0.53"
    marker = harness.unique_marker("nonsmtp-enforce")
    c = harness.deep_client(enforce, src)
    port = c.local_port
    c.send("GET / HTTP/1.0\r\n")
    reply = c.read_reply()
    check(reply.code >= 500 and not reply.final.startswith("521"),
          f"enforce: GET must get an error reply and the session goes on, got {reply.text!r}")
    enforce.wait_for_log(re_non_smtp(src, port, "CONNECT", r"GET / HTTP/1\.0$"))
    reply = c.cmd("Host: x")
    check(reply.code >= 500, f"enforce: 'Host: x' must get an error reply, got {reply.text!r}")
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    data = c.cmd("DATA")
    check(data.code >= 500, f"enforce: DATA must fail, got {data.text!r}")
    c.send(harness.message_text(marker) + ".\r\n")   # a bot sends its message anyway
    seen = c.drain(quiet=0.5, limit=5).decode(errors="replace")
    check("250 2.0.0" not in seen and "queued" not in seen, f"enforce: the bot's message was accepted: {seen!r}")
    c.expect("QUIT", 221)
    c.check_closed(5, "enforce: after QUIT")
    enforce.wait_for_log(harness.re_noqueue(
        src, r"550 5\.5\.1 Protocol error; from=<bot@example\.org>, to=<user@example\.test>, "
             r"proto=ESMTP, helo=<bot\.example>", port))
    enforce.wait_for_log(harness.re_disconnect(src, port))
    enforce.check_no_log(harness.re_pass_new(src))
    bots.append(src)

    # --- enforce: CONNECT as a proxy probe, with its header block in one write
    src = "127.0.0.54"
    c = harness.deep_client(enforce, src)
    port = c.local_port
    c.send("CONNECT host:25 HTTP/1.0\r\n")
    reply = c.read_reply()
    check(reply.code >= 500 and not reply.final.startswith("521"),
          f"enforce: CONNECT must get an error reply, got {reply.text!r}")
    enforce.wait_for_log(re_non_smtp(src, port, "CONNECT", r"CONNECT host:25 HTTP/1\.0$"))
    c.expect("HELO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    c.expect("QUIT", 221)
    enforce.wait_for_log(harness.re_noqueue(src, r"550 5\.5\.1 Protocol error; ", port))
    bots.append(src)

    # --- ignore: logged, handed off all the same, but no pass is cached
    src = "127.0.0.55"
    marker_ignore = harness.unique_marker("nonsmtp-ignore")
    c = harness.deep_client(ignore, src)
    port = c.local_port
    reply = c.cmd("Host: x")
    check(reply.code >= 500, f"ignore: 'Host: x' must get an error reply, got {reply.text!r}")
    ignore.wait_for_log(re_non_smtp(src, port, "CONNECT", r"Host: x$"))
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")   # the backend's answer
    c.expect("DATA", 354)
    c.send(harness.message_text(marker_ignore) + ".\r\n")
    c.expect(None, 250, r"queued as")
    c.expect("QUIT", 221)
    c.check_closed(5, "ignore: after QUIT")
    ignore.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} handoff")
    pf.wait_for_delivery(marker_ignore)
    pf.wait_for_log(harness.postfix_client_regex(src, port))
    ignore.check_no_log(harness.re_pass_new(src))
    c = harness.deep_client(ignore, src)   # tested again: smtpscreen's own greeting
    port2 = c.local_port
    c.expect("QUIT", 221)
    ignore.wait_for_log(harness.re_disconnect(src, port2))
    ignore.check_no_log(harness.re_pass_old(src))

    # --- a configured list
    dropped(custom, harness.deep_client(custom, "127.0.0.56"), "HEAD / HTTP/1.0\r\n", r"HEAD / HTTP/1\.0$")
    bots.append("127.0.0.56")

    pf.check_not_delivered(marker)
    for ip in bots:
        check(f"[{ip}]" not in pf.log(), f"Postfix saw non-SMTP client {ip}: it was handed off")
    for s in (drop, enforce, ignore, custom):
        s.stop()


harness.run(main)
