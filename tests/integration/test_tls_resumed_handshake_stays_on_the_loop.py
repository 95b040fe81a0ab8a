#!/usr/bin/env python3
"""docs/design.md, "TLS": only the handshake steps with a public-key operation (a full
handshake's key exchange) go to libuv's thread pool; a resumed handshake (session
ticket) has none, and runs on the event loop from the ClientHello to the Finished.
Seen from outside through tls.handshake_nice (19 here): the pool thread that runs a
handshake step lowers its own nice value before the first one, and nothing else does.
Instances A and B read one tls.ticket_key_file:
  - `openssl s_client -starttls smtp -sess_out` against A: a full handshake, and A has
    a thread at nice 19 (the check can see a step on the pool);
  - the same session offered to B with `-sess_in`: "Reused", B logs the usual
    `Anonymous TLS connection established` line, and every thread of B is still at the
    nice value B started with (0, unless the suite runs under nice(1)): no step of the
    resumed handshake went to the pool;
  - a full handshake with B then lowers one of B's threads to 19.
Before, every step that read the peer's bytes went to the pool, a resumed handshake's
too (two trips), and B's third check failed at its second."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ESTABLISHED = r"Anonymous TLS connection established from \[127\.0\.0\.7\]:\d+: TLSv1\.2 with cipher "


NICE = 19


def nice_of(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[16])   # after "(comm)" comes field 3; nice is field 19


def lowered_threads(pid):
    """{tid: nice} of the threads of the process whose nice value is not the main
    thread's (the one smtpscreen was started with)."""
    base = nice_of(pid, pid)
    lowered = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            nice = nice_of(pid, tid)
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        if nice != base:
            lowered[int(tid)] = nice
    return lowered


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    keys = harness.ticket_key_file(env, "ticket.key")
    settings = harness.tls_settings(cert, **{"tls.ticket_key_file": keys, "tls.handshake_nice": str(NICE)})
    a = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-a", settings=settings)
    b = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-b", settings=settings)
    check(nice_of(b.proc.pid, b.proc.pid) < NICE, f"smtpscreen started at nice {nice_of(b.proc.pid, b.proc.pid)}: "
                                                  f"no thread can be seen going below it to {NICE}")
    session = os.path.join(env.dir, "session.pem")

    since = a.log_size()
    check(harness.tls12_session(a.port, extra=["-sess_out", session]) == "New", "the first handshake with A resumed")
    a.wait_for_log(ESTABLISHED, since=since)
    check(lowered_threads(a.proc.pid), f"A: after a full handshake no thread is at tls.handshake_nice "
                                       f"(threads lowered: {lowered_threads(a.proc.pid)})")

    check(not lowered_threads(b.proc.pid), f"B: threads lowered before any STARTTLS: {lowered_threads(b.proc.pid)}")
    since = b.log_size()
    for n in range(3):
        got = harness.tls12_session(b.port, extra=["-sess_in", session])
        check(got == "Reused", f"A's ticket offered to B, handshake {n + 1}: {got}, expected Reused")
    b.wait_for_log(ESTABLISHED, since=since)
    check(not lowered_threads(b.proc.pid), f"B: after three resumed handshakes, threads at tls.handshake_nice "
                                           f"(a step went to the pool): {lowered_threads(b.proc.pid)}")

    check(harness.tls12_session(b.port) == "New", "B: the handshake without a session resumed")
    lowered = lowered_threads(b.proc.pid)
    check(lowered and all(n == NICE for n in lowered.values()),
          f"B: after a full handshake, no thread at nice {NICE} (threads lowered: {lowered})")
    harness.log(f"A's ticket: 3 resumed handshakes on B, no thread lowered; a full one lowered {lowered}")
    for s in (a, b):
        s.check_no_log(r"AddressSanitizer|runtime error")
        s.stop()


harness.run(main)
