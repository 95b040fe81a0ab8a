#!/usr/bin/env python3
"""docs/design.md, "TLS": smtpscreen terminates STARTTLS for its clients. With a test CA made by the
openssl command and smtpscreen's tls.cert/tls.key set:
  - `swaks --tls --tls-verify` and a scripted `openssl s_client -starttls smtp -crlf`
    (EHLO, MAIL, RCPT, DATA, QUIT typed line by line inside TLS) deliver through
    smtpscreen to the private Postfix, both on a client's first session (PASS NEW,
    handed off after greet.wait) and when it returns (PASS OLD);
  - the certificate they see is smtpscreen's (subject CN, verified against the test CA,
    a chain file with an intermediate for RSA), the protocol is TLSv1.2 with an ECDHE
    AES-GCM/ChaCha20 suite;
  - smtpscreen logs `Anonymous TLS connection established from [ip]:port: TLSv1.2 with
    cipher ...` for each client, and Postfix logs the real client address and port;
  - the same with an ECDSA certificate (ECDHE-ECDSA suites)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GOOD_SUITE = r"ECDHE-(RSA|ECDSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)"


def via_swaks(screen, pf, ca, source, expect, cert):
    marker = harness.unique_marker(f"swaks-{cert.kind}-{expect}")
    since = screen.log_size()
    r = harness.swaks(screen.port, source, marker,
                      extra=["--tls", "--tls-verify", "--tls-ca-path", ca.ca_file,
                             "--no-hide-informational"])
    out = r.stdout + r.stderr
    check(r.returncode == 0, f"swaks --tls from {source} through smtpscreen failed ({r.returncode}):\n{out}")
    harness.check_search(r"<-\s+220 2\.0\.0 Ready to start TLS", out, "swaks: smtpscreen's answer to STARTTLS")
    m = harness.check_search(r"TLS started with cipher (\S+?):(\S+?):", out, "swaks: TLS negotiated")
    check(m.group(1) == "TLSv1.2", f"swaks negotiated {m.group(1)}, expected TLSv1.2:\n{out}")
    check(re.fullmatch(GOOD_SUITE, m.group(2)), f"swaks negotiated cipher {m.group(2)}, expected {GOOD_SUITE}")
    harness.check_search(rf"TLS peer DN=\"?.*/CN={re.escape(cert.cn)}\b", out,
                         f"swaks: peer certificate is {cert.cn}")
    # The EHLO inside TLS went to the backend: its greeting name, no second STARTTLS.
    harness.check_search(r"<~\s+250-backend\.test", out, "swaks: the EHLO reply inside TLS is the backend's")
    check(not re.search(r"<~\s+250[- ]STARTTLS", out), f"EHLO inside TLS offers STARTTLS again:\n{out}")
    pm = screen.wait_for_log(rf"PASS {expect.upper()} \[{re.escape(source)}\]:(\d+)", since=since)
    port = pm.group(1)
    tm = screen.wait_for_log(harness.re_tls_established(source, port), since=since)
    check(tm.group(1) == m.group(2), f"smtpscreen logged cipher {tm.group(1)}, swaks saw {m.group(2)}")
    screen.wait_for_log(harness.re_disconnect(source, port), since=since, timeout=10)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(source, port))
    harness.log(f"swaks --tls [{source}]:{port} PASS {expect.upper()} {cert.kind}: {m.group(2)}, delivered")


def via_openssl(env, screen, pf, ca, source, expect, cert):
    marker = harness.unique_marker(f"openssl-{cert.kind}-{expect}")
    since = screen.log_size()
    c = harness.openssl_client(env, screen.port, source=source, ca_file=ca.ca_file)
    info = c.wait_established(timeout=15)
    check(info["protocol"] == "TLSv1.2", f"openssl s_client: protocol {info['protocol']}, expected TLSv1.2; {c.describe()}")
    check(info["cipher"] and re.fullmatch(GOOD_SUITE, info["cipher"]),
          f"openssl s_client: cipher {info['cipher']}, expected {GOOD_SUITE}")
    check(info["peer"] and re.search(rf"CN\s*=\s*{re.escape(cert.cn)}\b", info["peer"]),
          f"openssl s_client: peer certificate {info['peer']!r}, expected CN = {cert.cn}")
    check(info["verification"] == "OK", f"openssl s_client: verification {info['verification']!r}")
    ehlo = c.send_mail(marker)
    check(ehlo.startswith("250-backend.test"), f"EHLO inside TLS: expected the backend's reply, got {ehlo!r}")
    check(c.wait_exit(10) is not None, f"openssl s_client still running 10s after QUIT; {c.describe()}")
    pm = screen.wait_for_log(rf"PASS {expect.upper()} \[{re.escape(source)}\]:(\d+)", since=since)
    port = pm.group(1)
    tm = screen.wait_for_log(harness.re_tls_established(source, port), since=since)
    check(tm.group(1) == info["cipher"], f"smtpscreen logged cipher {tm.group(1)}, s_client saw {info['cipher']}")
    screen.wait_for_log(harness.re_disconnect(source, port), since=since, timeout=10)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(source, port))
    harness.log(f"openssl s_client [{source}]:{port} PASS {expect.upper()} {cert.kind}: {info['cipher']}, delivered")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    rsa = ca.issue("mx-rsa.test", "rsa", chain=True)
    ec = ca.issue("mx-ec.test", "ecdsa")

    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(rsa))
    via_swaks(screen, pf, ca, "127.0.0.7", "new", rsa)      # first session
    via_openssl(env, screen, pf, ca, "127.0.0.7", "old", rsa)
    via_openssl(env, screen, pf, ca, "127.0.0.8", "new", rsa)
    via_swaks(screen, pf, ca, "127.0.0.8", "old", rsa)
    check(not re.search(r"cipher ECDHE-ECDSA", screen.log_text()), "an RSA certificate gave an ECDSA suite")
    screen.stop()

    screen_ec = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-ecdsa", settings=harness.tls_settings(ec))
    via_openssl(env, screen_ec, pf, ca, "127.0.0.9", "new", ec)
    via_swaks(screen_ec, pf, ca, "127.0.0.9", "old", ec)
    check(not re.search(r"cipher ECDHE-RSA", screen_ec.log_text()), "an ECDSA certificate gave an RSA suite")
    check("client=unknown[127.0.0.1]" not in pf.log(),
          "Postfix logged a message from 127.0.0.1: the handoff hid the real client")
    screen_ec.stop()


harness.run(main)
