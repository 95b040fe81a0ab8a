#!/usr/bin/env python3
"""docs/design.md, "TLS": tls.cert and tls.key take a list, pairwise: one RSA and one
ECDSA pair (Postfix's smtpd_tls_eccert_file), and mbedTLS picks per client. One instance
with both:
  - `openssl s_client -starttls smtp -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256` (a
    client that can only verify RSA signatures) completes STARTTLS, is shown the RSA
    certificate (CN mx-rsa.test) and delivers; smtpscreen logs the RSA suite;
  - the same with `-cipher ECDHE-ECDSA-AES128-GCM-SHA256` (ECDSA only) is shown the
    ECDSA certificate (CN mx-ecdsa.test) and delivers;
`smtpscreen --check` refuses, naming the file and what to do:
  - the keys listed in the other order than their certificates ("does not match");
  - two RSA pairs ("both are RSA certificates");
  - two certificates and one key ("one key per certificate").
Before lists, the first two configurations were refused as unreadable files."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def config_check(env, name, settings):
    base = {"listen.address": "127.0.0.1:2525", "log.syslog": "off"}
    base.update(settings)
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write(harness.ini_text(base))
    r = subprocess.run([harness.find_smtpscreen(), "--check", "-c", path], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def expect_refused(env, name, settings, words):
    rc, out = config_check(env, name, settings)
    check(rc == 1, f"{name}: --check exited {rc}, expected 1: {out!r}")
    for w in words:
        check(w in out, f"{name}: --check does not say {w!r}: {out!r}")
    harness.log(f"{name}: refused: {out.strip().splitlines()[0]}")


def deliver_with(screen, pf, ca, suite, source, cn, tag):
    since = screen.log_size()
    c = harness.OpensslClient(screen.port, source=source, ca_file=ca.ca_file,
                              extra=("-tls1_2", "-cipher", suite))
    info = c.wait_established()
    check(info["cipher"] == suite, f"{tag}: negotiated {info['cipher']!r}, expected {suite}")
    peer = (info["peer"] or "").replace(" ", "")
    check(f"CN={cn}" in peer, f"{tag}: the server showed {info['peer']!r}, expected the certificate of {cn}")
    marker = harness.unique_marker(tag)
    c.send_mail(marker)
    c.wait_exit(10)
    pf.wait_for_delivery(marker)
    screen.wait_for_log(rf"Anonymous TLS connection established from \[{source}\]:\d+: TLSv1\.2 with cipher "
                        rf"{suite} ", since=since)
    harness.log(f"{tag}: {suite}, certificate {info['peer']}")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    rsa = ca.issue("mx-rsa.test", "rsa")
    ecdsa = ca.issue("mx-ecdsa.test", "ecdsa")
    rsa2 = ca.issue("mx-rsa2.test", "rsa")

    expect_refused(env, "swapped-keys.ini", {"tls.cert": f"{rsa.cert}, {ecdsa.cert}",
                                             "tls.key": f"{ecdsa.key}, {rsa.key}"},
                   [ecdsa.key, "does not match", rsa.cert, "in the order of their certificates"])
    expect_refused(env, "two-rsa.ini", {"tls.cert": f"{rsa.cert}, {rsa2.cert}",
                                        "tls.key": f"{rsa.key}, {rsa2.key}"},
                   ["both are RSA certificates", "one RSA and one ECDSA"])
    expect_refused(env, "one-key.ini", {"tls.cert": f"{rsa.cert}, {ecdsa.cert}", "tls.key": rsa.key},
                   ["tls.key", "one key per certificate"])
    rc, out = config_check(env, "both.ini", {"tls.cert": f"{rsa.cert}, {ecdsa.cert}",
                                             "tls.key": f"{rsa.key}, {ecdsa.key}"})
    check(rc == 0, f"--check refuses an RSA and an ECDSA pair: {out!r}")

    screen = env.smtpscreen(postfix=pf, dns=dns, settings={
        "tls.cert": f"{rsa.cert}, {ecdsa.cert}", "tls.key": f"{rsa.key}, {ecdsa.key}"})
    deliver_with(screen, pf, ca, "ECDHE-RSA-AES128-GCM-SHA256", "127.0.0.7", "mx-rsa.test", "rsa-only")
    deliver_with(screen, pf, ca, "ECDHE-ECDSA-AES128-GCM-SHA256", "127.0.0.8", "mx-ecdsa.test", "ecdsa-only")
    screen.stop()


harness.run(main)
