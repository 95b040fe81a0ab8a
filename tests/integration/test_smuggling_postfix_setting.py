#!/usr/bin/env python3
"""The README tells admins to set 'smtpd_forbid_bare_newline = reject' on the backend
Postfix (smtpscreen.ini(5)), which closes the SMTP smuggling gap on its own for whatever reaches
it. This proves the advice against the installed Postfix, sending straight to the
backend ports (no smtpscreen in the way):
  - with 'reject', a DATA with a bare-LF end-of-data vector (<LF>.<LF>, <LF>.<CR><LF>,
    <CR><LF>.<LF>) followed by a smuggled transaction is refused with a 5xx, Postfix
    logs 'bare <LF> received', and NEITHER message is queued; also on the port that
    takes the PROXY header smtpscreen sends (the client announced as 127.0.0.7), and
    with Postfix's default smtpd_forbid_bare_newline_exclusions = $mynetworks, which
    does not exempt a client announced by PROXY/XCLIENT with its real address;
  - a bare LF inside an ordinary message line is refused too;
  - control: the same bytes to a Postfix with 'no' queue two messages -- so 'reject'
    is what stops them.
Skipped when this Postfix has no smtpd_forbid_bare_newline (before 3.5.23/3.6.13/3.7.9/
3.8.4)."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

LF_VECTORS = ("LF.LF", "LF.CRLF", "CRLF.LF")


def transaction(c):
    c.expect(None, 220, r"backend\.test")
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250)
    c.expect("DATA", 354)


def attempt(pf, port, name, source="127.0.0.1", proxy_from=None):
    """Sends one vector; returns (replies text, marker, smuggled marker)."""
    marker = harness.unique_marker(f"{pf.base[-8:].strip('/')}-{name.replace('.', '')}")
    smuggled = marker + "-smuggled"
    c = harness.SmtpClient(port, source=source)
    if proxy_from:
        c.send(harness.proxy_v2_header(proxy_from, 40000 + len(name), "127.0.0.1", 25))
    transaction(c)
    c.send(harness.smuggling_payload(harness.SMUGGLING_VECTORS[name], marker, smuggled))
    got = c.drain(quiet=0.4, limit=5).decode(errors="replace")
    c.close()
    return got, marker, smuggled


def main(env):
    postconf = harness.which("postconf")
    out = subprocess.run([postconf, "-d", "smtpd_forbid_bare_newline"], capture_output=True, text=True)
    if not out.stdout.startswith("smtpd_forbid_bare_newline"):
        raise harness.Skip("this Postfix has no smtpd_forbid_bare_newline")
    strict = env.postfix(name="reject", bare_newline="reject")
    default_excl = env.postfix(name="reject-default-exclusions", bare_newline="reject",
                               main_extra={"smtpd_forbid_bare_newline_exclusions": "$mynetworks"})
    lax = env.postfix(name="lax", bare_newline="no")

    # --- control: without the setting the vectors smuggle a second message
    for name in ("LF.LF", "LF.CRLF"):
        got, marker, smuggled = attempt(lax, lax.plain_port, name)
        check(len(re.findall(r"^250 2\.0\.0 Ok: queued as", got, re.M)) == 2,
              f"control ({name}, smtpd_forbid_bare_newline = no): expected two messages queued, got {got!r}")
        lax.wait_for_delivery(marker)
        lax.wait_for_delivery(smuggled)
    harness.log("control: with 'no', Postfix queues the smuggled second message")

    # --- reject: plain port and the PROXY port smtpscreen hands off to
    cases = [(strict, strict.plain_port, "127.0.0.1", None, n) for n in LF_VECTORS]
    cases += [(strict, strict.proxy_port, "127.0.0.1", "127.0.0.7", n) for n in LF_VECTORS]
    cases += [(default_excl, default_excl.proxy_port, "127.0.0.1", "127.0.0.7", "LF.LF")]
    markers = []
    for pf, port, source, announced, name in cases:
        tag = f"{os.path.basename(pf.base)} port {port} {name}" + (f" as {announced}" if announced else "")
        got, marker, smuggled = attempt(pf, port, name, source, announced)
        markers.append((pf, marker, smuggled))
        check(re.search(r"^5\d\d .*bare <LF>", got, re.M),
              f"{tag}: Postfix must refuse the message with a 5xx about bare <LF>, got {got!r}")
        check("queued as" not in got and "\n354" not in got and not got.startswith("354"),
              f"{tag}: Postfix accepted part of the smuggling attempt: {got!r}")
        who = re.escape(announced or source)
        pf.wait_for_log(rf"bare <LF> received[^\n]*unknown\[{who}\]|unknown\[{who}\][^\n]*bare <LF> received")
        harness.log(f"{tag}: refused: {got.strip().splitlines()[0]!r}")

    # --- a bare LF inside an ordinary line
    c = harness.SmtpClient(strict.plain_port, source="127.0.0.1")
    transaction(c)
    marker = harness.unique_marker("inline-lf")
    c.send(harness.message_text(marker).replace("body of", "body\nof") + ".\r\n")
    got = c.drain(quiet=0.4, limit=5).decode(errors="replace")
    check(re.search(r"^5\d\d .*bare <LF>", got, re.M), f"a bare LF inside a line must be refused, got {got!r}")
    markers.append((strict, marker, marker))

    time.sleep(1.0)
    for pf, marker, smuggled in markers:
        check(not pf.delivered(marker) and not pf.delivered(smuggled),
              f"{pf.base}: a message of a refused bare-LF DATA arrived ({marker})")
    for pf in (strict, default_excl):
        check(not harness.postfix_queued_ids(pf),
              f"{pf.base}: Postfix with smtpd_forbid_bare_newline = reject queued "
              f"{harness.postfix_queued_ids(pf)}")


harness.run(main)
