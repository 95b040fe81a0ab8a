#!/usr/bin/env python3
"""With every deep protocol test on (docs/design.md, step 6), a well-behaved client delivers its
message in its FIRST session: smtpscreen finishes the greeting itself ('220-' at once,
then its own '220 screen.test ESMTP' after greet.wait), answers EHLO without
PIPELINING/XCLIENT/XFORWARD, and at the first RCPT TO replays the session to Postfix
(handoff header or XCLIENT, EHLO, MAIL FROM) and relays Postfix's answer to the RCPT.
Proved with Python smtplib, with swaks and with a raw client that says HELO and names
two recipients, through backend.handoff = proxy-v2 and xclient:
  - the RCPT and DATA answers are Postfix's ('2.1.5 Ok', 'queued as'), the message
    arrives in the Maildir, Postfix logs the real client address and port and writes
    the client's EHLO name and address into the Received header;
  - smtpscreen logs CONNECT, PASS NEW, DISCONNECT and no deep test violation;
  - the next connection from the same address is PASS OLD: handed off before any
    greeting of smtpscreen's own (the first line the client sees is the backend's 220),
    and delivers too."""
import os
import re
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

VIOLATIONS = r"(COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE|COMMAND COUNT LIMIT|COMMAND TIME LIMIT)"


def check_received(pf, marker, source):
    text = pf.wait_for_delivery(marker)
    harness.check_search(rf"Received: from client\.example\.org \(unknown \[{re.escape(source)}\]\)", text,
                         f"Received header of {marker} (replayed EHLO name and real address)")
    return text


def smtplib_first_session(screen, pf, source):
    """Python smtplib, step by step so that every answer can be checked."""
    gw = harness.duration_seconds(screen.settings["greet.wait"])
    marker = harness.unique_marker("smtplib")
    s = smtplib.SMTP(timeout=gw + 15, source_address=(source, 0))
    t0 = time.monotonic()
    code, banner = s.connect("127.0.0.1", screen.port)
    waited = time.monotonic() - t0
    port = s.sock.getsockname()[1]
    banner = banner.decode(errors="replace")
    check(code == 220, f"smtplib: greeting code {code} {banner!r}")
    check("screen.test ESMTP" in banner and "backend.test" not in banner,
          f"smtplib: a first-time client must get smtpscreen's own greeting (deep tests), got {banner!r}")
    check(waited >= gw - 0.15, f"smtplib: greeting complete after {waited:.2f}s, before greet.wait ({gw}s)")
    code, ehlo = s.ehlo("client.example.org")
    check(code == 250, f"smtplib: EHLO got {code} {ehlo!r}")
    for word in ("pipelining", "xclient", "xforward"):
        check(not s.has_extn(word), f"smtplib: smtpscreen's EHLO reply offers {word.upper()}: {ehlo!r}")
    code, text = s.mail("sender@example.org")
    check(code == 250, f"smtplib: MAIL FROM got {code} {text!r}")
    code, text = s.rcpt("user@example.test")
    check(code == 250 and b"2.1.5" in text,
          f"smtplib: RCPT TO must get the backend's answer (250 2.1.5 Ok), got {code} {text!r}")
    code, text = s.data(harness.message_text(marker).encode())
    check(code == 250 and b"queued as" in text, f"smtplib: end of data must get Postfix's 250 queued, got {code} {text!r}")
    code, text = s.quit()
    check(code == 221, f"smtplib: QUIT got {code} {text!r}")
    screen.wait_for_log(harness.re_connect(source, port))
    screen.wait_for_log(harness.re_pass_new(source, port))
    screen.wait_for_log(harness.re_disconnect(source, port), timeout=10)
    check_received(pf, marker, source)
    pf.wait_for_log(harness.postfix_client_regex(source, port))
    harness.log(f"smtplib [{source}]:{port}: deep tests passed, delivered {marker} in the first session")
    return port


def helo_first_session(screen, pf, source):
    """An old client that says HELO (no ESMTP) and sends two recipients: the replay uses
    HELO, Postfix records 'with SMTP', every recipient after the first is relayed."""
    marker = harness.unique_marker("helo")
    c = harness.deep_client(screen, source)
    port = c.local_port
    c.expect("HELO old.example.org", 250)
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")
    c.expect("RCPT TO:<other@example.test>", 250, r"2\.1\.5")
    c.expect("DATA", 354)
    c.send(harness.message_text(marker) + ".\r\n")
    c.expect(None, 250, r"queued as")
    c.expect("QUIT", 221)
    c.check_closed(5, "HELO client after QUIT")
    screen.wait_for_log(harness.re_pass_new(source, port))
    text = pf.wait_for_delivery(marker)
    harness.check_search(rf"Received: from old\.example\.org \(unknown \[{re.escape(source)}\]\)\s+by backend\.test "
                         rf"\(Postfix\) with SMTP id", text, f"Received header of {marker} (HELO replayed)")
    qid = re.search(r"with SMTP id (\w+)", text).group(1)
    pf.wait_for_log(rf"qmgr\[\d+\]: {qid}: from=<sender@example\.org>, size=\d+, nrcpt=2 ")
    harness.log(f"HELO client [{source}]:{port}: delivered {marker} to two recipients in the first session")


def swaks_session(screen, pf, source, expect):
    marker = harness.unique_marker(f"swaks-{expect}")
    r = harness.swaks(screen.port, source, marker)
    out = r.stdout + r.stderr
    check(r.returncode == 0, f"swaks ({expect}) through smtpscreen failed ({r.returncode}):\n{out}")
    check(not re.search(r"<-\s+250[- ](XCLIENT|XFORWARD)", out),
          f"swaks ({expect}): the EHLO reply offers XCLIENT/XFORWARD:\n{out}")
    if expect == "new":
        harness.check_search(r"<-\s+220-screen\.test ESMTP", out, f"swaks ({expect}) transcript")
        harness.check_search(r"<-\s+220 screen\.test ESMTP", out, f"swaks ({expect}) transcript")
        check(not re.search(r"<-\s+250[- ]PIPELINING", out),
              f"swaks (new): smtpscreen's own EHLO reply offers PIPELINING:\n{out}")
        m = screen.wait_for_log(rf"PASS NEW \[{re.escape(source)}\]:(\d+)")
    else:
        first = re.search(r"<-\s+(\d{3}[- ].*)", out)
        check(first and first.group(1).startswith("220 backend.test ESMTP"),
              f"swaks (PASS OLD): the first line must be the backend's greeting, got "
              f"{first.group(1) if first else None!r}:\n{out}")
        check("screen.test" not in out, f"swaks (PASS OLD) spoke to smtpscreen's own SMTP engine:\n{out}")
        m = screen.wait_for_log(rf"PASS OLD \[{re.escape(source)}\]:(\d+)")
    harness.check_search(r"<-\s+250 2\.1\.5 Ok", out, f"swaks ({expect}): RCPT answered by Postfix")
    harness.check_search(r"<-\s+250 2\.0\.0 Ok: queued as", out, f"swaks ({expect}): message queued by Postfix")
    port = m.group(1)
    screen.wait_for_log(harness.re_connect(source, port))
    screen.wait_for_log(harness.re_disconnect(source, port), timeout=10)
    check_received(pf, marker, source)
    pf.wait_for_log(harness.postfix_client_regex(source, port))
    harness.log(f"swaks [{source}]:{port}: PASS {expect.upper()}, delivered {marker}")
    return port


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.1/32")
    dns = env.rbldnsd()
    screens = {
        "proxy-v2": env.smtpscreen(postfix=pf, dns=dns, name="proxy-v2", settings=harness.deep_settings({
            "backend.address": f"127.0.0.1:{pf.proxy_port}", "backend.handoff": "proxy-v2",
            "greet.wait": "1s"})),
        "xclient": env.smtpscreen(postfix=pf, dns=dns, name="xclient", settings=harness.deep_settings({
            "backend.address": f"127.0.0.1:{pf.xclient_port}", "backend.handoff": "xclient",
            "greet.wait": "1s"})),
    }
    sources = {"proxy-v2": ("127.0.0.40", "127.0.0.41"), "xclient": ("127.0.0.42", "127.0.0.43")}
    helo_sources = {"proxy-v2": "127.0.0.38", "xclient": "127.0.0.39"}

    for name, screen in screens.items():
        harness.log(f"--- {name}")
        py_src, swaks_src = sources[name]
        smtplib_first_session(screen, pf, py_src)
        swaks_session(screen, pf, swaks_src, "new")
        helo_first_session(screen, pf, helo_sources[name])
        # Second connections: cached deep pass, handed off before the greeting.
        harness.clean_session(screen, pf, source=py_src, expect="old", tag=f"old-{name}")
        swaks_session(screen, pf, swaks_src, "old")
        for src in (py_src, swaks_src):
            screen.check_no_log(VIOLATIONS + rf" from {harness.ip_port(src)}")
            check(len(re.findall(harness.re_pass_new(src), screen.log_text())) == 1,
                  f"{name}: [{src}] must get exactly one PASS NEW (then PASS OLD)")

    check(not re.search(r"(client=|RCPT from )unknown\[127\.0\.0\.1\]", pf.log()),
          "Postfix saw a client as 127.0.0.1: a handoff hid the real client")
    for screen in screens.values():
        screen.stop()


harness.run(main)
