#!/usr/bin/env python3
"""docs/design.md, "TLS": TLS 1.2 only, no weak suites. Through smtpscreen's STARTTLS (after handoff):
  - `openssl s_client -starttls smtp -tls1_1` and `-tls1` (with @SECLEVEL=0 so that the
    client really sends its TLS 1.1/1.0 ClientHello) fail the handshake with a
    protocol_version alert from smtpscreen; smtpscreen logs `SSL_accept error from
    [ip]:port: ...` naming the client and the reason, and closes (DISCONNECT);
  - a client that offers only non-ECDHE (static RSA) or anonymous (aNULL) suites fails
    the same way (no suite in common, logged);
  - from the same client, `-tls1_2` and a default s_client (which would prefer TLS 1.3)
    both get TLSv1.2 with an ECDHE suite, logged as established."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.0.7"


def refused(screen, ca, what, extra, alert_regex, log_regex):
    since = screen.log_size()
    r = harness.openssl_handshake(screen.port, source=CLIENT, ca_file=ca.ca_file, extra=extra)
    detail = f"{' '.join(r.cmd)} -> {r.returncode}\nstderr:\n{r.stderr}\nstdout:\n{r.stdout}"
    check("no cipher match" not in r.stderr and "Unknown option" not in r.stderr,
          f"{what}: the local openssl could not even offer it (test setup): {detail}")
    check(r.returncode != 0, f"{what}: the handshake must fail: {detail}")
    check("CONNECTION ESTABLISHED" not in r.stderr, f"{what}: a TLS connection was established: {detail}")
    check(re.search(alert_regex, r.stderr), f"{what}: expected smtpscreen's alert /{alert_regex}/: {detail}")
    m = screen.wait_for_log(rf"SSL_accept error from \[{re.escape(CLIENT)}\]:(\d+): (.*)", since=since)
    port, reason = m.group(1), m.group(2)
    check(re.search(log_regex, reason), f"{what}: the SSL_accept error must say why (/{log_regex}/): {reason!r}")
    screen.wait_for_log(rf"DISCONNECT \[{re.escape(CLIENT)}\]:{port}\b", since=since)
    screen.check_no_log(harness.re_tls_established(CLIENT, port), since=since)
    harness.log(f"{what}: refused, logged: {reason}")


def accepted(screen, ca, what, extra):
    since = screen.log_size()
    r = harness.openssl_handshake(screen.port, source=CLIENT, ca_file=ca.ca_file, extra=extra)
    detail = f"{' '.join(r.cmd)} -> {r.returncode}\nstderr:\n{r.stderr}\nstdout:\n{r.stdout}"
    check("CONNECTION ESTABLISHED" in r.stderr, f"{what}: the handshake must succeed: {detail}")
    m = harness.check_search(r"^Protocol version: (\S+)", r.stderr, f"{what}: protocol")
    check(m.group(1) == "TLSv1.2", f"{what}: negotiated {m.group(1)}, expected TLSv1.2")
    c = harness.check_search(r"^Ciphersuite: (\S+)", r.stderr, f"{what}: cipher")
    check(c.group(1).startswith("ECDHE-"), f"{what}: cipher {c.group(1)} is not ECDHE")
    harness.check_search(r"^221 ", r.stdout, f"{what}: the backend's 221 to QUIT inside TLS")
    m = screen.wait_for_log(harness.re_tls_established(CLIENT), since=since)
    check(m.group(1) == c.group(1), f"{what}: smtpscreen logged {m.group(1)}, the client saw {c.group(1)}")
    harness.log(f"{what}: TLSv1.2 {c.group(1)}")
    return r, detail


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    rsa = ca.issue("mx-rsa.test", "rsa")
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(rsa))

    version = r"(?i)protocol|version|TLS 1\.2"
    refused(screen, ca, "TLS 1.1", ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
            r"alert protocol version", version)
    screen.wait_for_log(harness.re_pass_new(CLIENT))   # the first session was handed off
    refused(screen, ca, "TLS 1.0", ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
            r"alert protocol version", version)
    refused(screen, ca, "TLS 1.1 via -no_tls1_2 -no_tls1_3", ["-no_tls1_2", "-no_tls1_3", "-cipher", "DEFAULT@SECLEVEL=0"],
            r"alert protocol version", version)
    suites = r"(?i)cipher ?suite|in common"
    refused(screen, ca, "static RSA suites only", ["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA:AES128-SHA"],
            r"alert handshake failure", suites)
    refused(screen, ca, "ECDHE with CBC-SHA1 only", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"],
            r"alert handshake failure", suites)
    refused(screen, ca, "anonymous suites only", ["-tls1_2", "-cipher", "aNULL:@SECLEVEL=0"],
            r"alert handshake failure", suites)

    ok = [accepted(screen, ca, "TLS 1.2", ["-tls1_2"]),
          accepted(screen, ca, "default client (TLS 1.3 capable)", [])]
    check(screen.running(), "smtpscreen died during the refused handshakes")
    check(not pf.messages(), "nothing was sent, yet Postfix delivered a message")
    # RFC 5246 §7.2.1: a TLS session ends with close_notify before the TCP close (Postfix's
    # smtpd sends it after its 221). Without it OpenSSL 3 clients report "unexpected eof
    # while reading" and s_client exits 1, as for a truncation attack.
    for r, detail in ok:
        check(r.returncode == 0 and "unexpected eof" not in r.stderr,
              f"after QUIT inside TLS, smtpscreen closed the connection without a TLS "
              f"close_notify alert (s_client: unexpected eof): {detail}")
    screen.stop()


harness.run(main)
