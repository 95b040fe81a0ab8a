#!/usr/bin/env python3
"""docs/design.md, "TLS": `STARTTLS` inside a mail transaction gets
`503 5.5.1 Error: MAIL transaction in progress` wherever smtpscreen answers STARTTLS
itself, and the session goes on in clear as if it had not been sent. Against the private
Postfix (PROXY v2), smtpscreen with a certificate and the deep tests on:
  - deep tests (a new client): EHLO, MAIL FROM, STARTTLS gets the 503 from the dialog;
    its RCPT hands off (the replay puts MAIL and RCPT at Postfix); in the relay that
    follows, Postfix holds that transaction, so STARTTLS gets the relay's 503; DATA and
    the message are delivered; after the transaction a STARTTLS gets 220, and a second
    message goes through inside TLS;
  - the relay (the same client again, PASS OLD): EHLO, MAIL FROM, RCPT TO pipelined
    with STARTTLS and a NOOP behind it, in one packet: the 503 comes in its place, after
    the 250s, and the NOOP behind it is answered (not thrown away as if TLS had
    started); the message is delivered; then STARTTLS works.
Before the fix each STARTTLS got `220 2.0.0 Ready to start TLS`."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
SOURCE = "127.0.0.8"


def expect_refused(c, what):
    r = c.cmd("STARTTLS")
    check(r.text == IN_TRANSACTION, f"{what}: STARTTLS inside a transaction: expected {IN_TRANSACTION!r}, "
                                    f"got {r.text!r}; {c.transcript_text()}")


def finish_message(c, marker):
    c.expect("DATA", 354)
    c.send(harness.message_text(marker) + ".\r\n")
    c.expect(None, 250)


def then_tls(c, ca, pf, tag):
    """After the transaction: STARTTLS is taken, and a message goes through inside TLS."""
    r = c.cmd("STARTTLS")
    check(r.text == "220 2.0.0 Ready to start TLS", f"{tag}: STARTTLS after the transaction: {r.text!r}")
    harness.tls_wrap(c, ca.ca_file)
    marker = harness.unique_marker(f"{tag}-tls")
    c.send_mail(marker)
    c.check_closed(10, "after QUIT")
    c.close()
    pf.wait_for_delivery(marker)


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    screen = env.smtpscreen(postfix=pf, dns=dns,
                            settings=harness.tls_settings(cert, **{"deep.pipelining": "on"}))

    # The deep tests: the dialog answers the STARTTLS, then the relay after the replay.
    since = screen.log_size()
    c = harness.SmtpClient(screen.port, source=SOURCE, timeout=15)
    greeting = c.read_greeting(code=220)
    check(greeting.final == "220 screen.test ESMTP",
          f"a new client with deep tests on gets smtpscreen's own greeting, got {greeting.text!r}")
    check(harness.ehlo_offers(c.ehlo(), "STARTTLS"), "the deep tests' EHLO reply must offer STARTTLS")
    c.expect("MAIL FROM:<sender@example.org>", 250)
    expect_refused(c, "deep tests")
    c.expect("RCPT TO:<user@example.test>", 250)        # the handoff; Postfix answers it
    screen.wait_for_log(harness.re_pass_new(SOURCE), since=since)
    expect_refused(c, "relay after the deep tests' replay")
    marker = harness.unique_marker("deep")
    finish_message(c, marker)
    pf.wait_for_delivery(marker)
    then_tls(c, ca, pf, "deep")

    # PASS OLD, the STARTTLS pipelined behind the transaction. TLS before the backend
    # (tls.before_backend = on): smtpscreen greets and answers the EHLO, the MAIL hands
    # off (the EHLO replayed), and the relay refuses the STARTTLS.
    since = screen.log_size()
    c = harness.SmtpClient(screen.port, source=SOURCE, timeout=15)
    greeting = c.read_greeting(code=220)
    check(greeting.final == "220 screen.test ESMTP", f"PASS OLD: smtpscreen's own greeting, got {greeting.text!r}")
    screen.wait_for_log(harness.re_pass_old(SOURCE), since=since)
    check(harness.ehlo_offers(c.ehlo(), "STARTTLS"), "smtpscreen's EHLO reply must offer STARTTLS")
    c.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<user@example.test>\r\nSTARTTLS\r\nNOOP\r\n")
    replies = [c.read_reply() for _ in range(4)]
    texts = [r.text for r in replies]
    check([r.code for r in replies] == [250, 250, 503, 250] and texts[2] == IN_TRANSACTION,
          f"pipelined MAIL, RCPT, STARTTLS, NOOP: expected 250, 250, {IN_TRANSACTION!r}, 250, got {texts}")
    marker = harness.unique_marker("relay")
    finish_message(c, marker)
    pf.wait_for_delivery(marker)
    check(not re.search(r"sent \d+ byte\(s\) after STARTTLS", screen.log_text()[since:]),
          "bytes behind a refused STARTTLS were discarded as if TLS had started")
    then_tls(c, ca, pf, "relay")
    screen.stop()


harness.run(main)
