#!/usr/bin/env python3
"""docs/design.md, "TLS", the CVE-2011-0411 class: commands a client pipelines after STARTTLS, before
the handshake, are discarded, never run inside the TLS session.
  - A client (handed off to the private Postfix) sends `STARTTLS\\r\\nRSET\\r\\n` in ONE
    packet. It gets `220 2.0.0 Ready to start TLS` and nothing else in clear; after the
    TLS handshake (Python ssl over the same socket) a read with a short timeout gets
    nothing (no reply to RSET), and its EHLO gets the EHLO reply as the first thing;
    then it delivers a message. smtpscreen logs `[ip]:port sent 6 byte(s) after STARTTLS
    before the handshake; discarded`; Postfix's disconnect line counts one RSET,
    smtpscreen's own after the handshake, not two (and no STARTTLS: smtpscreen answered it).
  - The same with a whole injected envelope (`STARTTLS\\r\\nMAIL FROM:<...>\\r\\nRCPT
    TO:<...>\\r\\n`): inside TLS the client's own MAIL FROM gets 250 (not 503 "nested
    MAIL command"), and Postfix counts one MAIL and one RCPT."""
import os
import re
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def nothing_within(c, seconds, what):
    """Nothing arrives inside TLS for `seconds` (a read times out)."""
    check(c.buf == b"", f"{what}: unread bytes inside TLS: {c.buf!r}")
    c.sock.settimeout(seconds)
    try:
        data = c.sock.recv(65536)
    except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
        return
    check(False, f"{what}: got {data!r} inside TLS where nothing was expected "
                 f"(a reply to a command injected before the handshake); {c.transcript_text()}")


def injected_session(screen, pf, ca, source, injected, tag):
    since = screen.log_size()
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    c.read_greeting(code=220)
    ehlo = c.expect("EHLO client.example.org", 250)
    check(harness.ehlo_offers(ehlo, "STARTTLS"), f"EHLO does not offer STARTTLS: {ehlo.text!r}")
    c.send(b"STARTTLS\r\n" + injected)          # one send, one segment on loopback
    r = c.read_reply()
    check(r.code == 220 and r.text == "220 2.0.0 Ready to start TLS",
          f"STARTTLS: expected '220 2.0.0 Ready to start TLS', got {r.text!r}")
    harness.tls_wrap(c, ca.ca_file)           # fails if anything else came in clear
    nothing_within(c, 1.5, tag)
    e = c.expect("EHLO client.example.org", 250)
    check(e.lines[0] == "250-backend.test",
          f"{tag}: the first thing inside TLS must be the EHLO reply (250-backend.test), got {e.text!r}")
    marker = harness.unique_marker(tag)
    c.send_mail(marker, ehlo=False)
    c.check_closed(10, "after QUIT")
    c.close()
    m = screen.wait_for_log(rf"\[{re.escape(source)}\]:{port} sent (\d+) byte\(s\) after STARTTLS "
                            rf"before the handshake; discarded", since=since)
    check(int(m.group(1)) == len(injected),
          f"{tag}: smtpscreen logged {m.group(1)} discarded bytes, the client sent {len(injected)}")
    screen.wait_for_log(harness.re_tls_established(source, port), since=since)
    pf.wait_for_delivery(marker)
    d = pf.wait_for_log(rf"disconnect from unknown\[{re.escape(source)}\]:{port} (.*)")
    counts = d.group(1)
    harness.log(f"{tag}: [{source}]:{port} Postfix counted: {counts}")
    return counts


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(cert))

    counts = injected_session(screen, pf, ca, "127.0.0.7", b"RSET\r\n", "rset")
    # One RSET is smtpscreen's own after the handshake (RFC 3207 §4.2); the injected one
    # would be a second.
    check(re.search(r"\brset=1\b", counts), f"the injected RSET reached Postfix: {counts}")
    check("starttls=" not in counts, f"the client's STARTTLS reached Postfix: {counts}")
    check(re.search(r"\bmail=1 rcpt=1 data=1\b", counts), f"Postfix's counts: {counts}")

    envelope = b"MAIL FROM:<attacker@example.org>\r\nRCPT TO:<user@example.test>\r\n"
    counts = injected_session(screen, pf, ca, "127.0.0.8", envelope, "envelope")
    check(re.search(r"\bmail=1 rcpt=1 data=1\b", counts),
          f"the injected MAIL/RCPT reached Postfix (it counts more than the client's own): {counts}")
    check("attacker@example.org" not in pf.log(), "Postfix saw the injected sender")
    screen.stop()


harness.run(main)
