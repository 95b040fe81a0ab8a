#!/usr/bin/env python3
"""The SMTP-level limits and refusals of smtpscreen's own SMTP engine during the deep
tests (docs/design.md, "Hostile input"; limits.* in smtpscreen.ini(5)):
  - VRFY and EXPN get '502 5.5.1';
  - a 512-octet command line (CRLF included, RFC 5321 §4.5.3.1.4) is accepted, a
    513-octet and a 600-octet one get '500 5.5.2 Line too long', and the session goes on;
  - AUTH, XCLIENT, XFORWARD and BDAT are refused (5xx) and never reach Postfix: after
    all of them the client still passes and delivers, and Postfix's per-session command
    statistics show exactly 'ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5';
  - limits.command_count_limit = 3: EHLO, MAIL, RCPT (3 commands) still hand off; a
    fourth command before the handoff gets '421 4.7.0 ... too many commands', close,
    'COMMAND COUNT LIMIT' logged, never handed off; QUIT is always allowed;
  - limits.command_time_limit = 2s: a command dripped one byte at a time (which must
    not restart the clock) and a client that says nothing both get
    '421 4.4.2 ... Error: timeout exceeded' about 2s after the clock started, logged
    'COMMAND TIME LIMIT'."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def refused(c, line, code_regex, tag):
    r = c.cmd(line)
    check(re.match(code_regex, r.final), f"{tag}: {line[:40]!r}... must get /{code_regex}/, got {r.text!r}")
    return r


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, name="limits", settings=harness.deep_settings({
        "greet.wait": "1s"}))
    counted = env.smtpscreen(postfix=pf, dns=dns, name="count", settings=harness.deep_settings({
        "greet.wait": "1s", "limits.command_count_limit": "3"}))
    timed = env.smtpscreen(postfix=pf, dns=dns, name="time", settings=harness.deep_settings({
        "greet.wait": "1s", "limits.command_time_limit": "2s"}))

    # --- refusals and line length, then a normal delivery in the same session
    src = "127.0.0.90"
    marker = harness.unique_marker("limits")
    c = harness.deep_client(screen, src)
    port = c.local_port
    refused(c, "VRFY root", r"^502 5\.5\.1 ", "VRFY")
    refused(c, "EXPN staff", r"^502 5\.5\.1 ", "EXPN")
    ok = c.cmd("NOOP " + "x" * 505)              # 512 octets with the CRLF
    check(ok.code == 250, f"a 512-octet command line must be accepted, got {ok.text!r}")
    refused(c, "NOOP " + "x" * 506, r"^500 5\.5\.2 Line too long", "513-octet line")
    refused(c, "HELO " + "a" * 595, r"^500 5\.5\.2 Line too long", "600-octet line")
    refused(c, "AUTH PLAIN AGFsaWNlAHNlY3JldA==", r"^5\d\d ", "AUTH")
    refused(c, "XCLIENT ADDR=127.0.0.1 NAME=localhost", r"^5\d\d ", "XCLIENT")
    refused(c, "xclient addr=127.0.0.1", r"^5\d\d ", "xclient (lower case)")
    refused(c, "XFORWARD ADDR=127.0.0.1", r"^5\d\d ", "XFORWARD")
    refused(c, "BDAT 0 LAST", r"^5\d\d ", "BDAT")
    ehlo = c.ehlo()
    for word in ("PIPELINING", "XCLIENT", "XFORWARD", "CHUNKING", "AUTH", "VRFY"):
        check(not re.search(rf"^250[- ]{word}\b", ehlo.text, re.M), f"smtpscreen's EHLO reply offers {word}: {ehlo.text!r}")
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")
    c.expect("DATA", 354)
    c.send(harness.message_text(marker) + ".\r\n")
    c.expect(None, 250, r"queued as")
    c.expect("QUIT", 221)
    c.check_closed(5, "after QUIT")
    pf.wait_for_delivery(marker)
    screen.wait_for_log(harness.re_pass_new(src, port))
    stats = pf.wait_for_log(rf"disconnect from unknown\[{re.escape(src)}\]:{port} (.*)$")
    check(stats.group(1).strip() == "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
          f"Postfix saw other commands than the replayed EHLO/MAIL/RCPT and the relayed DATA/QUIT: "
          f"{stats.group(0)!r}")
    harness.check_no_search(r"(?i)xclient|xforward|sasl|bdat|vrfy|expn", pf.log(), "Postfix log")
    screen.check_no_log(rf"(COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE) from {harness.ip_port(src)}")

    # --- command count: three commands are enough to pass
    src = "127.0.0.91"
    marker2 = harness.unique_marker("count-ok")
    c = harness.deep_client(counted, src)
    c.send_mail(marker2)
    c.check_closed(5, "count limit 3: after QUIT")
    pf.wait_for_delivery(marker2)
    counted.wait_for_log(harness.re_pass_new(src))

    # a fourth command before the handoff is one too many
    src = "127.0.0.92"
    c = harness.deep_client(counted, src)
    port = c.local_port
    for _ in range(3):
        c.expect("NOOP", 250)
    r = c.cmd("EHLO bot.example")
    check(r.final.startswith("421 4.7.0") and "too many commands" in r.final,
          f"the 4th command with limits.command_count_limit = 3 must get '421 4.7.0 ... too many commands', "
          f"got {r.text!r}")
    c.check_closed(3, "after the 421 of the command count limit")
    counted.wait_for_log(rf"COMMAND COUNT LIMIT from {harness.ip_port(src, port)}")
    counted.wait_for_log(harness.re_disconnect(src, port))
    counted.check_no_log(harness.re_pass_new(src))

    # QUIT is always allowed
    src = "127.0.0.93"
    c = harness.deep_client(counted, src)
    for _ in range(3):
        c.expect("NOOP", 250)
    c.expect("QUIT", 221)
    c.check_closed(3, "QUIT after the count limit")

    # --- command time limit: a slow drip does not restart the clock
    src = "127.0.0.94"
    c = harness.deep_client(timed, src)
    port = c.local_port
    t0 = time.monotonic()
    got = b""
    for ch in "EHLO client.example.org":
        try:
            c.send(ch)
        except OSError:
            break
        c.sock.settimeout(0.4)
        try:
            chunk = c.sock.recv(4096)
        except OSError:
            chunk = None
        if chunk:
            got += chunk
            break
        if chunk == b"" or time.monotonic() - t0 > 5:
            break
    t = time.monotonic() - t0
    got = (got + c.drain(0.5, 2)).decode(errors="replace")
    check(re.match(r"421 4\.4\.2 \S+ Error: timeout exceeded", got),
          f"a dripped command must get '421 4.4.2 ... Error: timeout exceeded', got {got!r} after {t:.1f}s")
    check(1.7 <= t <= 3.5, f"the drip got its 421 after {t:.2f}s; limits.command_time_limit is 2s "
                           f"from the line's first byte")
    c.check_closed(3, "after the command time limit")
    timed.wait_for_log(rf"COMMAND TIME LIMIT from {harness.ip_port(src, port)}")
    timed.wait_for_log(harness.re_disconnect(src, port))

    # a client that says nothing after the greeting
    src = "127.0.0.95"
    c = harness.deep_client(timed, src)
    port = c.local_port
    t0 = time.monotonic()
    r = c.read_reply(timeout=6)
    t = time.monotonic() - t0
    check(r.final.startswith("421 4.4.2") and "timeout exceeded" in r.final,
          f"a silent client must get '421 4.4.2 ... timeout exceeded', got {r.text!r}")
    check(1.7 <= t <= 3.5, f"the silent client got its 421 after {t:.2f}s (limit 2s)")
    c.check_closed(3, "silent client after 421")
    timed.wait_for_log(rf"COMMAND TIME LIMIT from {harness.ip_port(src, port)}")

    for ip in ("127.0.0.92", "127.0.0.93", "127.0.0.94", "127.0.0.95"):
        check(f"[{ip}]" not in pf.log(), f"Postfix saw {ip}, which never passed")
    for s in (screen, counted, timed):
        s.stop()


harness.run(main)
