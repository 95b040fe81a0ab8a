#!/usr/bin/env python3
"""docs/design.md, "TLS" seen by Postfix's own TLS client: `posttls-finger -l secure -F CA` against
smtpscreen (tls.cert a chain file: leaf + intermediate, the test root as the only trust
anchor) verifies smtpscreen's certificate (subject CN, issuer the intermediate) and
reports TLSv1.2 with an ECDHE suite; the same for an ECDSA certificate. A first session
(PASS NEW, greet.wait) and a returning client (PASS OLD) both get it. Against a CA that
did not sign the certificate, `-l secure` fails verification (so the check is real)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def finger(screen, pf, ca_file, cert, expect_pass, what):
    since = screen.log_size()
    r = harness.posttls_finger(screen.port, pf, ca_file=ca_file, level="secure", match=cert.cn)
    out = r.stdout + r.stderr
    harness.log(f"{what}: {' '.join(r.cmd)} -> {r.returncode}\n{out}")
    if not expect_pass:
        check(not re.search(r"Verified TLS connection established", out),
              f"{what}: posttls-finger verified a certificate that the given CA did not sign:\n{out}")
        check(re.search(r"(?i)untrusted|not trusted|verification failed|unable to get local issuer|"
                        r"certificate verification failed", out),
              f"{what}: posttls-finger must report a verification failure:\n{out}")
        return out
    m = harness.check_search(
        r"Verified TLS connection established to \[?127\.0\.0\.1\]?\[127\.0\.0\.1\]:(\d+): "
        r"(TLSv[\d.]+) with cipher (\S+) \((\d+)/(\d+) bits\)", out,
        f"{what}: posttls-finger's verified connection")
    check(int(m.group(1)) == screen.port, f"{what}: posttls-finger connected to port {m.group(1)}")
    check(m.group(2) == "TLSv1.2", f"{what}: posttls-finger negotiated {m.group(2)}, expected TLSv1.2:\n{out}")
    check(re.fullmatch(r"ECDHE-(RSA|ECDSA)-\S+", m.group(3)), f"{what}: cipher {m.group(3)} is not ECDHE")
    check(("ECDSA" in m.group(3)) == (cert.kind == "ecdsa"),
          f"{what}: cipher {m.group(3)} does not match the {cert.kind} certificate")
    sm = harness.check_search(r"subject_CN=([^,\s]+)", out, f"{what}: posttls-finger's certificate subject")
    check(sm.group(1) == cert.cn, f"{what}: posttls-finger saw subject CN {sm.group(1)}, expected {cert.cn}:\n{out}")
    # smtpscreen logged the same handshake (posttls-finger's source port is not printed).
    tm = screen.wait_for_log(harness.re_tls_established("127.0.0.1"), since=since)
    check(tm.group(1) == m.group(3), f"{what}: smtpscreen logged cipher {tm.group(1)}, posttls-finger {m.group(3)}")
    return out


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    other = harness.make_test_ca(env, name="unrelated CA", subdir="other-ca")
    rsa = ca.issue("mx-rsa.test", "rsa", chain=True)
    ec = ca.issue("mx-ec.test", "ecdsa", chain=True)

    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(rsa))
    out = finger(screen, pf, ca.ca_file, rsa, True, "RSA, first session")
    harness.check_search(r"issuer_CN=smtpscreen test CA intermediate", out, "the issuer is the intermediate")
    screen.wait_for_log(harness.re_pass_new("127.0.0.1"))
    finger(screen, pf, ca.ca_file, rsa, True, "RSA, returning client")
    screen.wait_for_log(harness.re_pass_old("127.0.0.1"))
    finger(screen, pf, other.ca_file, rsa, False, "RSA, wrong CA")
    screen.stop()

    screen_ec = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-ecdsa", settings=harness.tls_settings(ec))
    finger(screen_ec, pf, ca.ca_file, ec, True, "ECDSA, first session")
    screen_ec.stop()


harness.run(main)
