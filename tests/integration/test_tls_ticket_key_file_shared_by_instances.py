#!/usr/bin/env python3
"""docs/design.md, "TLS": with the same tls.ticket_key_file (80 random bytes, as nginx's
ssl_session_ticket_key) two instances open each other's session tickets. Instances A
and B read one key file, C another:
  - `openssl s_client -starttls smtp -sess_out` against A gets a ticket; the same
    session offered with `-sess_in` to B is "Reused" (no full handshake), and B logs the
    usual `Anonymous TLS connection established` line for it;
  - offered to C (another key file) it is "New": a full handshake, no error;
  - `--check` refuses a key file that is not 80 bytes, naming the file and the command
    that makes one.
Before the key file, every instance had keys of its own: B answered "New"."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    shared = harness.ticket_key_file(env, "ticket.key")
    other = harness.ticket_key_file(env, "other-ticket.key")

    short = harness.ticket_key_file(env, "short-ticket.key", 48)
    path = os.path.join(env.dir, "short.ini")
    with open(path, "w") as f:
        f.write(harness.ini_text({"listen.address": "127.0.0.1:2525", "log.syslog": "off", "tls.cert": cert.cert,
                                  "tls.key": cert.key, "tls.ticket_key_file": short}))
    r = subprocess.run([harness.find_smtpscreen(), "--check", "-c", path], capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    check(r.returncode == 1 and short in out and "48 bytes, not 80" in out and "openssl rand 80" in out,
          f"--check with a 48-byte tls.ticket_key_file: exit {r.returncode}: {out!r}")

    a = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-a",
                       settings=harness.tls_settings(cert, **{"tls.ticket_key_file": shared}))
    b = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-b",
                       settings=harness.tls_settings(cert, **{"tls.ticket_key_file": shared}))
    c = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-c",
                       settings=harness.tls_settings(cert, **{"tls.ticket_key_file": other}))
    session = os.path.join(env.dir, "session.pem")
    check(harness.tls12_session(a.port, "127.0.0.7", ["-sess_out", session]) == "New", "the first handshake with A resumed")
    check(os.path.getsize(session) > 0, "openssl s_client wrote no session")
    since = b.log_size()
    got = harness.tls12_session(b.port, "127.0.0.7", ["-sess_in", session])
    check(got == "Reused", f"A's ticket offered to B (same tls.ticket_key_file): {got}, expected Reused")
    b.wait_for_log(r"Anonymous TLS connection established from \[127\.0\.0\.7\]:\d+: TLSv1\.2 with cipher ",
                   since=since)
    got = harness.tls12_session(c.port, "127.0.0.7", ["-sess_in", session])
    check(got == "New", f"A's ticket offered to C (another key file): {got}, expected New")
    harness.log("A's ticket: Reused on B (same key file), New on C (another)")
    for s in (a, b, c):
        s.check_no_log(r"SSL_accept error")
        s.stop()


harness.run(main)
