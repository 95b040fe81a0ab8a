#!/usr/bin/env python3
"""RFC 3207 §4.2 and docs/design.md, "TLS": when smtpscreen terminates a client's
STARTTLS, the backend never sees it, so smtpscreen must make the backend forget what it
was told in clear. A sender given before the handshake (which a man in the middle could
have sent) must never survive into the TLS session at the backend. Against the private
Postfix (PROXY v2), smtpscreen with a certificate:
  - relay: EHLO, `MAIL FROM:<plaintext-sender@...>` (250), STARTTLS. Either the
    STARTTLS is refused (503), or, inside TLS, `RCPT TO` without a new MAIL must get
    Postfix's `503 5.5.1 Error: need MAIL command`; no message from that sender is
    delivered;
  - after the deep tests' replay (MAIL and RCPT sent to Postfix in clear), STARTTLS, then
    DATA at once: either the STARTTLS is refused, or the DATA must be refused; nothing
    is delivered;
  - after every handshake smtpscreen terminates, Postfix gets an RSET from smtpscreen
    before the client's first command in TLS: its disconnect line counts `rset=1` for a
    client that sent none.
Before the fix, STARTTLS got 220 in both cases, the RCPT (or DATA) inside TLS was
accepted and the plaintext sender's message was delivered; Postfix counted no RSET."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

PLAINTEXT_SENDER = "plaintext-sender@example.org"


def postfix_counts(pf, source, port):
    m = pf.wait_for_log(rf"disconnect from unknown\[{re.escape(source)}\]:{port} (.*)")
    return m.group(1)


def starttls_or_refused(c, ca, tag):
    """STARTTLS; True when the session is now in TLS, False when it was refused."""
    r = c.cmd("STARTTLS")
    if r.code == 503:
        harness.log(f"{tag}: STARTTLS refused: {r.text}")
        return False
    check(r.code == 220, f"{tag}: STARTTLS: expected 220 or 503, got {r.text!r}")
    harness.tls_wrap(c, ca.ca_file)
    return True


def plaintext_sender_in_relay(screen, pf, ca, source):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    c.read_greeting(code=220)
    c.ehlo()
    c.expect(f"MAIL FROM:<{PLAINTEXT_SENDER}>", 250)
    marker = harness.unique_marker("relay-plaintext-sender")
    if starttls_or_refused(c, ca, "relay"):
        r = c.cmd("RCPT TO:<user@example.test>")
        if r.code == 250:
            c.expect("DATA", 354)
            c.send(harness.message_text(marker, mail_from=PLAINTEXT_SENDER) + ".\r\n")
            c.read_reply()
        check(r.text == "503 5.5.1 Error: need MAIL command",
              f"relay: inside TLS the backend still had the sender given in clear: RCPT TO got {r.text!r}")
    c.expect("QUIT", 221)
    c.close()
    pf.check_not_delivered(marker)
    postfix_counts(pf, source, port)


def plaintext_replay_then_tls(screen, pf, ca, source):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    c.read_greeting(code=220)
    c.ehlo()
    c.expect(f"MAIL FROM:<{PLAINTEXT_SENDER}>", 250)
    c.expect("RCPT TO:<user@example.test>", 250)         # handed off: replayed in clear
    marker = harness.unique_marker("replay-plaintext-sender")
    if starttls_or_refused(c, ca, "after the replay"):
        r = c.cmd("DATA")
        if r.code == 354:
            c.send(harness.message_text(marker, mail_from=PLAINTEXT_SENDER) + ".\r\n")
            c.read_reply()
        check(r.code == 503, f"after the replay: inside TLS the backend still had the transaction "
                             f"given in clear: DATA got {r.text!r}")
    c.expect("QUIT", 221)
    c.close()
    pf.check_not_delivered(marker)


def reset_counted(screen, pf, ca, source):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    c.read_greeting(code=220)
    c.ehlo()
    check(starttls_or_refused(c, ca, "no transaction"), "STARTTLS without a transaction was refused")
    marker = harness.unique_marker("reset")
    c.send_mail(marker)
    c.close()
    pf.wait_for_delivery(marker)
    counts = postfix_counts(pf, source, port)
    harness.log(f"Postfix counted for [{source}]:{port}: {counts}")
    check(re.search(r"\bmail=1 rcpt=1 data=1\b", counts), f"Postfix's counts: {counts}")
    check(re.search(r"\brset=1\b", counts),
          f"Postfix got no RSET after the handshake smtpscreen terminated (its state from before TLS "
          f"was kept): {counts}")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")

    # The relay's own STARTTLS: the second session from 127.0.0.7 is PASS OLD, which with
    # tls.before_backend = on would do its handshake before the backend is connected
    # (no RSET owed then: test_tls_before_backend).
    relay = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(cert, **{"tls.before_backend": "off"}))
    plaintext_sender_in_relay(relay, pf, ca, "127.0.0.7")
    reset_counted(relay, pf, ca, "127.0.0.7")
    relay.stop()

    deep = env.smtpscreen(postfix=pf, dns=dns, name="deep",
                          settings=harness.tls_settings(cert, **{"deep.pipelining": "on"}))
    plaintext_replay_then_tls(deep, pf, ca, "127.0.0.9")
    deep.stop()
    check(PLAINTEXT_SENDER not in "".join(text for _, text in pf.messages()),
          "a message from the sender given in clear was delivered")


harness.run(main)
