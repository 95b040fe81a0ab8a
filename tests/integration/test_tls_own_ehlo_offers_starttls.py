#!/usr/bin/env python3
"""docs/design.md, "TLS"; issue 4: STARTTLS is offered in smtpscreen's OWN EHLO reply too, before any
handoff: "(enforce mode and deep tests)".
  - Deep tests (deep.pipelining = on): a new client gets smtpscreen's greeting and its
    EHLO reply (not the backend's) offering STARTTLS; STARTTLS gets `220 2.0.0 Ready to
    start TLS`; after the handshake (smtpscreen's certificate) the EHLO reply inside TLS
    offers no STARTTLS; the client's message is delivered to Postfix (handed off after
    the deep tests, still inside the client's TLS session), smtpscreen logs the TLS
    line and PASS NEW, Postfix the real client; Postfix saw no STARTTLS (the client's
    TLS ends at smtpscreen). The returning client (PASS OLD) does STARTTLS after handoff.
  - Enforce mode (dnsbl.action = enforce, a listed client): smtpscreen's own EHLO
    reply offers STARTTLS; inside TLS, RCPT gets the 550 of the enforce dialog and
    smtpscreen logs NOQUEUE for the client; nothing is delivered."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def own_dialog_starttls(screen, ca, cert, source):
    """Greeting and EHLO from smtpscreen itself (not backend.test), STARTTLS offered,
    handshake; returns (client, port, EHLO reply inside TLS)."""
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    g = c.read_greeting(code=220)
    check(g.final.startswith("220 screen.test"), f"expected smtpscreen's own greeting, got {g.text!r}")
    ehlo = c.expect("EHLO client.example.org", 250)
    check("backend.test" not in ehlo.text, f"expected smtpscreen's own EHLO reply, got the backend's: {ehlo.text!r}")
    check(harness.ehlo_offers(ehlo, "STARTTLS"),
          f"smtpscreen's own EHLO reply (tls.cert/tls.key set) does not offer STARTTLS: {ehlo.text!r}")
    r = c.expect("STARTTLS", 220)
    check(r.text == "220 2.0.0 Ready to start TLS", f"STARTTLS: {r.text!r}")
    harness.tls_wrap(c, ca.ca_file)
    check(harness.peer_cn(c.sock) == cert.cn, f"certificate CN {harness.peer_cn(c.sock)}, expected {cert.cn}")
    check(c.sock.version() == "TLSv1.2", f"protocol {c.sock.version()}")
    e2 = c.expect("EHLO client.example.org", 250)
    check(not harness.ehlo_offers(e2, "STARTTLS"), f"EHLO inside TLS offers STARTTLS again: {e2.text!r}")
    return c, port, e2


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")

    # Deep tests: smtpscreen's own dialog, STARTTLS there, then the handoff.
    deep = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-deep",
                          settings=harness.tls_settings(cert, **{"deep.pipelining": "on"}))
    c, port, _ = own_dialog_starttls(deep, ca, cert, "127.0.0.7")
    marker = harness.unique_marker("deep-tls")
    c.send_mail(marker, ehlo=False)
    c.check_closed(10, "after QUIT")
    c.close()
    deep.wait_for_log(harness.re_tls_established("127.0.0.7", port))
    deep.wait_for_log(harness.re_pass_new("127.0.0.7", port))
    deep.wait_for_log(harness.re_disconnect("127.0.0.7", port), timeout=10)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.7", port))
    d = pf.wait_for_log(rf"disconnect from unknown\[127\.0\.0\.7\]:{port} (.*)")
    check("starttls=" not in d.group(1), f"Postfix saw a STARTTLS: {d.group(0)}")

    # The same client again: cached, handed off at once, STARTTLS on the backend's EHLO.
    c, e = harness.starttls_client(deep.port, source="127.0.0.7", ca_file=ca.ca_file)
    check(e.lines[0] == "250-backend.test", f"PASS OLD: the EHLO reply inside TLS must be the backend's: {e.text!r}")
    marker = harness.unique_marker("deep-tls-old")
    c.send_mail(marker, ehlo=False)
    c.close()
    deep.wait_for_log(harness.re_pass_old("127.0.0.7"))
    pf.wait_for_delivery(marker)
    deep.stop()

    # Enforce mode: a DNSBL-listed client stays in smtpscreen's own dialog.
    enforce = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-enforce",
                             settings=harness.tls_settings(cert, **{"dnsbl.action": "enforce"}))
    c, port, _ = own_dialog_starttls(enforce, ca, cert, harness.LISTED_CLIENT)
    c.expect("MAIL FROM:<sender@example.org>", 250)
    r = c.cmd("RCPT TO:<user@example.test>")
    check(r.code == 550, f"enforce mode inside TLS: RCPT must get 550, got {r.text!r}")
    c.expect("QUIT", 221)
    c.close()
    enforce.wait_for_log(harness.re_tls_established(harness.LISTED_CLIENT, port))
    enforce.wait_for_log(harness.re_noqueue(harness.LISTED_CLIENT, r"550", port))
    check(not pf.delivered("enforce"), "a message from the listed client was delivered")
    enforce.stop()


harness.run(main)
