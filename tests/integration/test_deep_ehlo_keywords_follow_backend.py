#!/usr/bin/env python3
"""deep.ehlo_keywords = auto (the default): during the deep tests smtpscreen's own EHLO
reply offers what the backend offers, so a first-time client is never promised what
the backend refuses after the replay. Behind a private Postfix with
smtpd_discard_ehlo_keywords = dsn, smtputf8 (and smtputf8_enable = yes):
  - smtpscreen asks Postfix at start and logs the keywords it learned;
  - a first-time client's EHLO reply offers exactly Postfix's keywords (SIZE with
    Postfix's own limit) less PIPELINING, VRFY, CHUNKING, XCLIENT, XFORWARD: no DSN,
    no SMTPUTF8 (before, smtpscreen offered both whatever the backend did);
  - that client's 'RCPT ... NOTIFY=SUCCESS,FAILURE' gets the very reply Postfix alone
    gives it;
  - a DSN-aware client (it asks for NOTIFY only when DSN is offered, as Postfix's own
    smtp client does) delivers its message in its first session;
  - after Postfix also discards ETRN and smtpscreen gets a SIGHUP, a new client is no
    longer offered ETRN.
With deep.ehlo_keywords = SIZE 1000000, 8BITMIME the EHLO reply offers exactly those
two and smtpscreen never asks the backend; a list naming XCLIENT is refused by --check."""
import os
import re
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

LEFT_OUT = {"PIPELINING", "VRFY", "CHUNKING", "XCLIENT", "XFORWARD", "STARTTLS", "AUTH", "HELP", "BINARYMIME"}
LEARNED = r"backend EHLO keywords \(from asking 127\.0\.0\.1:\d+\): (.*); the deep tests' EHLO now offers: (.*) \("
RCPT_DSN = "RCPT TO:<user@example.test> NOTIFY=SUCCESS,FAILURE"


def keyword_lines(reply):
    return [ln[4:] for ln in reply.lines[1:]]


def postfix_alone(pf):
    """Postfix's EHLO keyword lines and its answer to a RCPT with NOTIFY=, on its plain port."""
    c = harness.SmtpClient(pf.plain_port, source="127.0.0.1")
    c.expect(None, 220)
    lines = keyword_lines(c.expect("EHLO client.example.org", 250))
    c.expect("MAIL FROM:<sender@example.org>", 250)
    rcpt = c.cmd(RCPT_DSN)
    c.cmd("QUIT")
    c.close()
    return lines, rcpt


def main(env):
    pf = env.postfix(main_extra={"smtputf8_enable": "yes", "smtpd_discard_ehlo_keywords": "dsn, smtputf8"})
    backend_lines, direct_rcpt = postfix_alone(pf)
    words = [ln.split()[0].upper() for ln in backend_lines]
    check("DSN" not in words and "SMTPUTF8" not in words and "ETRN" in words,
          f"the private Postfix must discard DSN and SMTPUTF8 and offer ETRN: {backend_lines}")
    check(direct_rcpt.code >= 500, f"Postfix alone must refuse NOTIFY= once DSN is discarded: {direct_rcpt.text!r}")
    expected = [ln for ln in backend_lines if ln.split()[0].upper() not in LEFT_OUT]
    harness.log(f"Postfix alone offers {backend_lines}; answers {RCPT_DSN!r} with {direct_rcpt.text!r}")

    screen = env.smtpscreen(postfix=pf, settings=harness.deep_settings())
    m = screen.wait_for_log(LEARNED, timeout=10)
    check(m.group(1).split(", ") == backend_lines,
          f"smtpscreen learned {m.group(1)!r}, Postfix offers {backend_lines}")
    check(m.group(2).split(", ") == expected, f"smtpscreen offers {m.group(2)!r}, expected {expected}")

    # A first-time client: the EHLO reply is the backend's promise, and the NOTIFY= the
    # backend refuses gets the backend's own answer.
    c = harness.deep_client(screen, "127.0.0.7")
    offered = keyword_lines(c.expect("EHLO client.example.org", 250))
    check(offered == expected, f"smtpscreen's EHLO during the deep tests offers {offered}, expected {expected} "
          f"(Postfix's {backend_lines} less {sorted(LEFT_OUT)})")
    c.expect("MAIL FROM:<sender@example.org>", 250)
    proxied = c.cmd(RCPT_DSN)
    check(proxied.text == direct_rcpt.text,
          f"{RCPT_DSN!r}: through smtpscreen {proxied.text!r}, from Postfix alone {direct_rcpt.text!r}")
    c.cmd("QUIT")
    c.close()
    screen.wait_for_log(harness.re_disconnect("127.0.0.7"), timeout=10)

    # A DSN-aware client delivers in its first session.
    marker = harness.unique_marker("dsn-aware")
    s = smtplib.SMTP(timeout=20, source_address=("127.0.0.8", 0))
    s.connect("127.0.0.1", screen.port)
    s.ehlo("client.example.org")
    for ext in ("dsn", "smtputf8"):
        check(not s.has_extn(ext), f"smtplib: smtpscreen offers {ext.upper()} that Postfix discards")
    options = ["NOTIFY=SUCCESS,FAILURE"] if s.has_extn("dsn") else []
    refused = s.sendmail("sender@example.org", ["user@example.test"], harness.message_text(marker).encode(),
                         rcpt_options=options)
    check(not refused, f"smtplib: refused recipients {refused}")
    s.quit()
    pf.wait_for_delivery(marker)

    # Postfix discards ETRN too: a reload of smtpscreen asks again.
    r = subprocess.run([pf.postconf, "-c", pf.config_dir, "-e", "smtpd_discard_ehlo_keywords=dsn, smtputf8, etrn"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"postconf -e: {r.stderr}")
    r = pf._run("reload")
    check(r.returncode == 0, f"postfix reload: {r.stdout}{r.stderr}")
    size = screen.log_size()
    screen.signal(1)
    m = screen.wait_for_log(LEARNED, timeout=10, since=size)
    check("ETRN" not in m.group(2), f"after Postfix discards ETRN and a SIGHUP, smtpscreen still offers it: {m.group(0)}")
    c = harness.deep_client(screen, "127.0.0.9")
    offered = keyword_lines(c.expect("EHLO client.example.org", 250))
    check(offered == [ln for ln in expected if ln != "ETRN"], f"after the reload the EHLO reply offers {offered}")
    c.cmd("QUIT")
    c.close()
    harness.log(f"auto: offered {expected}, then without ETRN after SIGHUP; NOTIFY= answered {proxied.text!r}")

    # An explicit list is offered as written, and the backend is never asked.
    listed = env.smtpscreen(postfix=pf, name="listed", settings=harness.deep_settings({
        "deep.ehlo_keywords": "SIZE 1000000, 8BITMIME"}))
    c = harness.deep_client(listed, "127.0.0.10")
    offered = keyword_lines(c.expect("EHLO client.example.org", 250))
    check(offered == ["SIZE 1000000", "8BITMIME"], f"deep.ehlo_keywords = SIZE 1000000, 8BITMIME: offered {offered}")
    c.cmd("QUIT")
    c.close()
    listed.check_no_log(r"backend EHLO keywords")

    bad = os.path.join(env.dir, "bad.ini")
    with open(bad, "w") as f:
        f.write(harness.ini_text(dict(listed.settings, **{"deep.ehlo_keywords": "8BITMIME, XCLIENT ADDR"})))
    r = harness.run_smtpscreen(["-c", bad, "--check"])
    out = r.stdout + r.stderr
    check(r.returncode == 1 and re.search(r"deep\.ehlo_keywords: \"XCLIENT ADDR\" cannot be offered", out),
          f"--check must refuse XCLIENT in deep.ehlo_keywords (rc {r.returncode}): {out!r}")


harness.run(main)
