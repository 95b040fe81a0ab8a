#!/usr/bin/env python3
"""docs/design.md, "TLS"; issue 4: SIGHUP reloads tls.cert/tls.key for new connections.
  - smtpscreen starts with certificate A (RSA, CN mx-a.test) in tls/cert.pem and
    tls/key.pem; `openssl s_client -starttls smtp` sees CN mx-a.test.
  - A client opens a TLS session (certificate A) and stays. The files are replaced by
    certificate B (ECDSA, CN mx-b.test) at the same paths; SIGHUP; smtpscreen logs the
    reload; a new connection sees CN mx-b.test with an ECDHE-ECDSA suite, while the
    session opened before still works and delivers its message.
  - A broken certificate file at SIGHUP (garbage), then a certificate that does not
    match the key: each time smtpscreen logs an error naming the file and keeps
    certificate B; new connections still see CN mx-b.test; it keeps running."""
import os
import re
import shutil
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def seen_cn(screen, ca, source):
    r = harness.openssl_handshake(screen.port, source=source, ca_file=ca.ca_file, extra=["-tls1_2"])
    detail = f"{' '.join(r.cmd)} -> {r.returncode}\n{r.stderr}{r.stdout}"
    check("CONNECTION ESTABLISHED" in r.stderr, f"handshake through smtpscreen failed: {detail}")
    m = harness.check_search(r"^Peer certificate: .*CN = (\S+)", r.stderr, "s_client's peer certificate")
    c = harness.check_search(r"^Ciphersuite: (\S+)", r.stderr, "s_client's cipher")
    v = harness.check_search(r"^Verification: (.*)$", r.stderr, "s_client's verification")
    check(v.group(1).strip() == "OK", f"certificate verification: {v.group(1)}: {detail}")
    return m.group(1), c.group(1)


def install(src, dst_cert, dst_key):
    # Replace the files by rename, as a certificate manager does (no half-written file).
    for s, d in ((src.cert, dst_cert), (src.key, dst_key)):
        shutil.copyfile(s, d + ".new")
        os.chmod(d + ".new", 0o644)
        os.replace(d + ".new", d)


def sighup(screen, expect_regex):
    since = screen.log_size()
    screen.signal(signal.SIGHUP)
    return screen.wait_for_log(expect_regex, since=since)


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    a = ca.issue("mx-a.test", "rsa")
    b = ca.issue("mx-b.test", "ecdsa")
    tls_dir = os.path.join(env.dir, "tls")
    os.makedirs(tls_dir)
    cert_path, key_path = os.path.join(tls_dir, "cert.pem"), os.path.join(tls_dir, "key.pem")
    install(a, cert_path, key_path)
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={"tls.cert": cert_path, "tls.key": key_path})

    cn, cipher = seen_cn(screen, ca, "127.0.0.7")
    check(cn == "mx-a.test", f"before SIGHUP: certificate CN {cn}, expected mx-a.test")
    check(cipher.startswith("ECDHE-RSA-"), f"certificate A is RSA, cipher {cipher}")

    # A session in TLS with certificate A, open across the reload.
    old, _ = harness.starttls_client(screen.port, source="127.0.0.8", ca_file=ca.ca_file)
    check(harness.peer_cn(old.sock) == "mx-a.test", f"open session: CN {harness.peer_cn(old.sock)}")

    install(b, cert_path, key_path)
    sighup(screen, r"SIGHUP: reloaded ")
    cn, cipher = seen_cn(screen, ca, "127.0.0.7")
    check(cn == "mx-b.test", f"after SIGHUP: a new connection sees certificate CN {cn}, expected mx-b.test")
    check(cipher.startswith("ECDHE-ECDSA-"), f"certificate B is ECDSA, cipher {cipher}")

    marker = harness.unique_marker("open-across-sighup")
    old.send_mail(marker, ehlo=False)
    old.check_closed(10, "after QUIT")
    old.close()
    pf.wait_for_delivery(marker)

    # A broken certificate file: an error naming it, certificate B stays.
    with open(cert_path + ".new", "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nthis is not base64 at all\n-----END CERTIFICATE-----\n")
    os.replace(cert_path + ".new", cert_path)
    since = screen.log_size()
    sighup(screen, r"SIGHUP: .* error\(s\); keeping the settings in use")
    log = screen.log_text()[since:]
    check(re.search(rf"{re.escape(cert_path)}", log), f"the SIGHUP error must name {cert_path}:\n{log}")
    check(screen.running(), "smtpscreen exited after a SIGHUP with a broken certificate")
    cn, _ = seen_cn(screen, ca, "127.0.0.7")
    check(cn == "mx-b.test", f"after a failed reload: CN {cn}, expected mx-b.test (kept)")

    # A certificate that does not belong to the key (A's certificate with B's key).
    shutil.copyfile(a.cert, cert_path + ".new")
    os.replace(cert_path + ".new", cert_path)
    since = screen.log_size()
    sighup(screen, r"SIGHUP: .* error\(s\); keeping the settings in use")
    log = screen.log_text()[since:]
    check(re.search(rf"{re.escape(cert_path)}|{re.escape(key_path)}", log),
          f"the mismatch error must name the certificate or key file:\n{log}")
    check(re.search(r"(?i)match|belong|pair", log), f"the error must say the key does not match:\n{log}")
    cn, _ = seen_cn(screen, ca, "127.0.0.7")
    check(cn == "mx-b.test", f"after a failed reload: CN {cn}, expected mx-b.test (kept)")

    # Fixed files and another SIGHUP: certificate A again.
    install(a, cert_path, key_path)
    sighup(screen, r"SIGHUP: reloaded ")
    cn, _ = seen_cn(screen, ca, "127.0.0.7")
    check(cn == "mx-a.test", f"after the repaired reload: CN {cn}, expected mx-a.test")
    screen.stop()


harness.run(main)
