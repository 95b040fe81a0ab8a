#!/usr/bin/env python3
"""tls.passthrough (issue 14, hole 4): without tls.cert (the shipped default) and with a
PROXY handoff, a backend that offers STARTTLS is passed through end to end, and inside
that TLS the relay filter sees nothing.

The backend is a Postfix whose smtpd offers STARTTLS and reads <LF>.<LF> as an end of
data (smtpd_forbid_bare_newline = no), so only smtpscreen can stop a smuggling vector.
  - tls.passthrough = on (the default): smtpscreen warns at start, and `--check` warns,
    that smuggling defence is then the backend's own (smtpd_forbid_bare_newline =
    reject) and how to change it; the client's EHLO reply offers the backend's
    STARTTLS and the client's STARTTLS gets the backend's 220 (passed through);
  - tls.passthrough = off: no such warning; the EHLO reply offers no STARTTLS, the
    client's STARTTLS is refused (5xx, the backend never starts TLS), and a smuggling
    vector sent after it is still caught: 550 5.5.2 bare <LF>, neither the message nor
    the smuggled one is delivered."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

WARNING = r"tls\.passthrough: on and tls\.cert is empty.*smtpd_forbid_bare_newline = reject.*tls\.passthrough = off"


def offers_starttls(ehlo):
    return any(re.match(r"250[- ]STARTTLS\b", ln, re.I) for ln in ehlo.lines)


def main(env):
    ca = harness.make_test_ca(env)
    pf = harness.tls_postfix(env, ca.issue("backend.test", "rsa"), bare_newline="no")

    # --- on (the default): warned about, and STARTTLS goes through to the backend
    on = env.smtpscreen(postfix=pf, name="on")
    on.wait_for_log(WARNING)
    r = on.run_cli("-c", on.config_path, "--check")
    check(r.returncode == 0, f"--check failed: {r.stdout}{r.stderr}")
    harness.check_search(WARNING, r.stderr, "--check with tls.passthrough = on and no tls.cert")

    c = harness.SmtpClient(on.port, source="127.0.0.7")
    c.read_greeting(code=220)
    ehlo = c.ehlo()
    check(offers_starttls(ehlo), f"passthrough on: the backend's STARTTLS must be offered, got {ehlo.text!r}")
    c.expect("STARTTLS", 220, r"Ready to start TLS")
    c.close()
    pf.wait_for_log(r"(?i)TLS.*from unknown\[127\.0\.0\.7\]|SSL_accept error from unknown\[127\.0\.0\.7\]|"
                    r"lost connection after STARTTLS from unknown\[127\.0\.0\.7\]")
    on.stop()

    # --- off: hidden, refused, and the filter still sees the message
    off = env.smtpscreen(postfix=pf, name="off", settings={"tls.passthrough": "off"})
    r = off.run_cli("-c", off.config_path, "--check")
    check(r.returncode == 0 and "tls.passthrough" not in r.stderr,
          f"--check with tls.passthrough = off must not warn about it:\n{r.stdout}{r.stderr}")

    c = harness.SmtpClient(off.port, source="127.0.0.8")
    port = c.local_port
    c.read_greeting(code=220)
    ehlo = c.ehlo()
    check(not offers_starttls(ehlo), f"passthrough off: STARTTLS must not be offered, got {ehlo.text!r}")
    refused = c.cmd("STARTTLS")
    check(500 <= refused.code < 600, f"passthrough off: a client's STARTTLS must be refused, got {refused.text!r}")
    # Still plain text: a smuggling attempt in the same session is seen and refused.
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250)
    c.expect("DATA", 354)
    marker = harness.unique_marker("passthrough-off")
    smuggled = harness.unique_marker("passthrough-off-smuggled")
    c.send(harness.smuggling_payload(harness.SMUGGLING_VECTORS["LF.LF"], marker, smuggled))
    reply = c.read_reply()
    check(reply.final.startswith("550 5.5.2 Message contains bare <LF>"),
          f"passthrough off: the vector after a refused STARTTLS must be caught, got {reply.text!r}")
    c.check_closed(5, "after the 550")
    off.wait_for_log(rf"DISCONNECT {harness.ip_port('127.0.0.8', port)} bad-message")
    pf.check_not_delivered(marker)
    pf.check_not_delivered(smuggled, wait=0)
    check(not re.search(r"(?i)TLS connection established from unknown\[127\.0\.0\.8\]", pf.log()),
          "passthrough off: the backend started TLS with the client")
    off.check_no_log(r"tls\.passthrough")
    off.stop()


harness.run(main)
