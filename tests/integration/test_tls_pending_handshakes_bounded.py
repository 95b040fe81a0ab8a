#!/usr/bin/env python3
"""docs/design.md, "TLS": tls.max_pending_handshakes bounds the client handshakes in
progress (from our 220 to a STARTTLS until the handshake ends). With the bound at 1,
wherever smtpscreen answers STARTTLS itself (the relay after the handoff, and the deep
tests' dialog):
  - client A says STARTTLS, gets the 220 and says nothing yet: it holds the one slot;
  - client B's STARTTLS gets `454 4.7.0 TLS not available due to temporary reason`,
    smtpscreen logs `TLS not started for [ip]:port: 1 handshakes in progress
    (tls.max_pending_handshakes)`, and B delivers its message in plain text;
  - A finishes its handshake: the slot is free again, so C's STARTTLS gets the 220 and
    C delivers inside TLS (A too);
  - D takes the slot and hangs up after the 220: once D's session is over, E gets the
    220 (a session that ends gives its slot back).
No timing decides any of it: A holds its slot until it chooses to go on. Without the
bound, B gets the 220."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BUSY = "454 4.7.0 TLS not available due to temporary reason"
READY = "220 2.0.0 Ready to start TLS"


def starttls_reply(port, source, what):
    c = harness.SmtpClient(port, source=source, timeout=15)
    c.read_greeting(code=220)
    ehlo = c.expect("EHLO client.example.org", 250)
    check(harness.ehlo_offers(ehlo, "STARTTLS"), f"{what}: EHLO does not offer STARTTLS: {ehlo.text!r}")
    return c, c.cmd("STARTTLS")


def expect_ready(port, source, what):
    c, r = starttls_reply(port, source, what)
    check(r.text == READY, f"{what}: STARTTLS: expected {READY!r}, got {r.text!r}; {c.transcript_text()}")
    return c


def scenario(env, pf, dns, ca, settings, path):
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=settings, name=f"smtpscreen-{path}")
    port = screen.port

    a = expect_ready(port, "127.0.0.7", f"{path}: A")

    since = screen.log_size()
    b, r = starttls_reply(port, "127.0.0.8", f"{path}: B")
    check(r.text == BUSY, f"{path}: B's STARTTLS while A holds the only slot: expected {BUSY!r}, got {r.text!r}")
    screen.wait_for_log(rf"TLS not started for \[127\.0\.0\.8\]:{b.local_port}: 1 handshakes in progress "
                        rf"\(tls\.max_pending_handshakes\)", since=since)
    marker = harness.unique_marker(f"{path}-plain")
    b.send_mail(marker)
    b.close()
    pf.wait_for_delivery(marker)

    harness.tls_wrap(a, ca.ca_file)
    c = expect_ready(port, "127.0.0.9", f"{path}: C after A's handshake")
    harness.tls_wrap(c, ca.ca_file)
    for client, tag in ((a, "a"), (c, "c")):
        marker = harness.unique_marker(f"{path}-tls-{tag}")
        client.send_mail(marker)
        client.close()
        pf.wait_for_delivery(marker)

    d = expect_ready(port, "127.0.0.10", f"{path}: D")
    d_port = d.local_port
    since = screen.log_size()
    d.close()
    screen.wait_for_log(harness.re_disconnect("127.0.0.10", d_port), since=since)
    e = expect_ready(port, "127.0.0.11", f"{path}: E after D hung up")
    harness.tls_wrap(e, ca.ca_file)
    e.close()
    screen.check_no_log(r"SSL_accept error|AddressSanitizer")
    screen.stop()


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    bound = {"tls.max_pending_handshakes": "1"}
    # Known at once (the access list): the relay answers STARTTLS.
    access = harness.permit_loopback(env)
    scenario(env, pf, dns, ca, harness.tls_settings(cert, **{"access.file": access}, **bound), "relay")
    # A new client in the deep tests: the dialog answers it.
    scenario(env, pf, dns, ca, harness.tls_settings(cert, **{"deep.pipelining": "on"}, **bound), "dialog")


harness.run(main)
