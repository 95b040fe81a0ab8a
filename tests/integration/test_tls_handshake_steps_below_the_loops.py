#!/usr/bin/env python3
"""docs/design.md, "TLS": the threads that run TLS handshake steps (smtpscreen's pool,
named tls-handshake, one per CPU or tls.handshake_threads of them) lower their own
nice value to tls.handshake_nice, so that under a STARTTLS flood the event
loops, which every session's timers and relays wait on, win the CPU. Read from
/proc/PID/task/TID/stat (field 19, nice):
  - before any STARTTLS, every thread of smtpscreen runs at nice 0, or the nice value
    smtpscreen was started with (the pool has no threads yet);
  - after a client's STARTTLS, handshake and delivery inside TLS, the threads that
    existed before (the main thread, the event loop) are still at 0, and the thread that
    ran the handshake steps is at 10, the default;
  - with tls.handshake_nice = 19 that thread is at 19; with 0, every thread stays at 0
    and the handshake works as ever;
  - with tls.handshake_nice = idle that thread runs under SCHED_IDLE (field 41, policy 5)
    and every other thread under SCHED_OTHER (0);
  - the threads that appear with the first STARTTLS are the pool's: named tls-handshake,
    as many as the CPUs smtpscreen may run on, or tls.handshake_threads (3 with nice 19)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


SCHED_IDLE = 5


def thread_nices(pid, field=16):
    """{tid: nice} of every thread of the process (field=38: {tid: scheduling policy})."""
    nices = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        nices[int(tid)] = int(fields[field])   # after "(comm)" comes field 3; nice is field 19, policy 41
    return nices


def pool_threads(pid, before, tag, want):
    """The threads started since `before` are the handshake pool's: `want` of them, each
    named tls-handshake."""
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) in before:
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except FileNotFoundError:
            continue
    check(len(names) == want and all(n == "tls-handshake" for n in names.values()),
          f"{tag}: after the first STARTTLS, threads {names} appeared; want {want} named tls-handshake")


def deliver_in_tls(screen, pf, ca, source, tag):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    c.read_greeting(code=220)
    ehlo = c.expect("EHLO client.example.org", 250)
    check(harness.ehlo_offers(ehlo, "STARTTLS"), f"{tag}: EHLO does not offer STARTTLS: {ehlo.text!r}")
    c.expect("STARTTLS", 220)
    harness.tls_wrap(c, ca.ca_file)
    marker = harness.unique_marker(f"nice-{tag}")
    c.send_mail(marker)
    c.close()
    pf.wait_for_delivery(marker)


def scenario(env, pf, dns, ca, cert, access, nice):
    settings = {"access.file": access, "process.threads": "1"}
    if nice is not None:
        settings["tls.handshake_nice"] = str(nice)
    if nice == 19:
        settings["tls.handshake_threads"] = "3"
    if nice == "idle":
        return idle_scenario(env, pf, dns, ca, cert, settings)
    expected = 10 if nice is None else nice
    tag = f"nice-{expected}"
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(cert, **settings),
                            name=f"smtpscreen-{tag}")
    pid = screen.proc.pid
    before = thread_nices(pid)
    # The nice value smtpscreen was started with (0, unless the suite itself runs under
    # nice): every thread starts there, and a handshake thread at or below it stays.
    base = before[pid]
    if expected <= base:
        expected = 0
    check(all(n == base for n in before.values()), f"{tag}: before any STARTTLS, threads not at nice {base}: {before}")
    since = screen.log_size()
    deliver_in_tls(screen, pf, ca, "127.0.0.7", tag)
    screen.wait_for_log(harness.re_tls_established("127.0.0.7"), since=since)
    after = thread_nices(pid)
    for tid in before:
        check(after.get(tid, base) == base, f"{tag}: thread {tid}, there before the pool (main or event loop), "
                                            f"is at nice {after.get(tid)} after a handshake: {after}")
    lowered = {tid: n for tid, n in after.items() if n != base}
    if expected == 0:
        check(not lowered, f"{tag}: tls.handshake_nice = 0, yet threads were lowered: {after}")
    else:
        check(lowered and all(n == expected for n in lowered.values()),
              f"{tag}: after a handshake no thread runs at nice {expected} (threads before: {before}, "
              f"after: {after})")
    pool_threads(pid, before, tag, 3 if nice == 19 else len(os.sched_getaffinity(pid)))
    harness.log(f"{tag}: threads before {sorted(before.values())}, after {sorted(after.values())}")
    screen.check_no_log(r"AddressSanitizer|runtime error")
    screen.stop()


def idle_scenario(env, pf, dns, ca, cert, settings):
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(cert, **settings),
                            name="smtpscreen-idle")
    pid = screen.proc.pid
    before = thread_nices(pid, field=38)
    check(all(p == 0 for p in before.values()), f"idle: before any STARTTLS, threads not all SCHED_OTHER: {before}")
    since = screen.log_size()
    deliver_in_tls(screen, pf, ca, "127.0.0.8", "idle")
    screen.wait_for_log(harness.re_tls_established("127.0.0.8"), since=since)
    after = thread_nices(pid, field=38)
    for tid in before:
        check(after.get(tid, 0) == 0, f"idle: thread {tid}, there before the pool (main or event loop), runs "
                                      f"under policy {after.get(tid)} after a handshake: {after}")
    idle = [tid for tid, p in after.items() if p == SCHED_IDLE]
    check(idle and all(p in (0, SCHED_IDLE) for p in after.values()),
          f"idle: after a handshake no thread runs under SCHED_IDLE (policies before: {before}, after: {after})")
    pool_threads(pid, before, "idle", len(os.sched_getaffinity(pid)))
    harness.log(f"idle: policies before {sorted(before.values())}, after {sorted(after.values())}")
    screen.check_no_log(r"AddressSanitizer|runtime error")
    screen.stop()


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    access = harness.permit_loopback(env)
    for nice in (None, 19, 0, "idle"):
        scenario(env, pf, dns, ca, cert, access, nice)


harness.run(main)
