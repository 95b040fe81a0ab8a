#!/usr/bin/env python3
"""`smtpscreen -c FILE cache list|show IP|delete IP|flush|stats` against the LMDB cache of
a running daemon (README, "Cache tools"): the tool opens the same file beside the
daemon, sees the passes the daemon stored, and what it deletes or flushes is gone for
the daemon too, so that client's next connection gets the greet wait again ('220-'
first, PASS NEW) while the others stay PASS OLD. A memory cache cannot be reached from
outside the daemon: the tool says so and exits 1. The daemon runs throughout and stops
cleanly at the end."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

A, B, C = "127.0.0.80", "127.0.0.81", "127.0.0.82"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def main(env):
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={"dnsbl.sites": None})
    harness.expect_pass_new(screen, A, "first visit")
    harness.expect_pass_new(screen, B, "first visit")
    harness.expect_pass_old(screen, A, "second visit")

    listed = harness.cache_cli(screen, "list").stdout.splitlines()
    check(len(listed) == 2, f"cache list: expected 2 records, got {listed}")
    for ip, line in zip((A, B), listed):
        check(re.fullmatch(rf"{re.escape(ip)} pregreet={STAMP} dnsbl=(-|{STAMP}) pipelining=- non_smtp=- "
                           rf"bare_newline=- greylist=-", line), f"cache list: unexpected line {line!r}")

    shown = harness.cache_cli(screen, "show", A).stdout
    check(re.search(rf"^{re.escape(A)}\n  pregreet +passed, valid until {STAMP} \(\d+s left\)$", shown, re.M)
          and re.search(r"^  pipelining +never passed$", shown, re.M), f"cache show {A}: {shown!r}")
    missing = harness.cache_cli(screen, "show", C, rc=1)
    check(f"{C} is not in the cache" in missing.stderr, f"cache show {C}: {missing.stderr!r}")
    harness.cache_cli(screen, "show", "not-an-address", rc=2)

    stats = harness.cache_cli(screen, "stats").stdout
    check(re.search(r"^records: 2$", stats, re.M) and re.search(r"^records with a valid pass: 2$", stats, re.M)
          and re.search(r"^valid pregreet passes: 2$", stats, re.M), f"cache stats: {stats!r}")

    deleted = harness.cache_cli(screen, "delete", A)
    check(f"deleted {A}" in deleted.stdout, f"cache delete {A}: {deleted.stdout!r}")
    harness.cache_cli(screen, "delete", A, rc=1)
    check([l.split()[0] for l in harness.cache_cli(screen, "list").stdout.splitlines()] == [B],
          "after cache delete, only the other client may be listed")
    harness.expect_pass_new(screen, A, "after cache delete")
    harness.expect_pass_old(screen, B, "after deleting the other client")

    flushed = harness.cache_cli(screen, "flush")
    check(re.search(r"flushed .*: 2 records deleted", flushed.stdout), f"cache flush: {flushed.stdout!r}")
    check(harness.cache_cli(screen, "list").stdout == "", "cache list after flush must print nothing")
    check(re.search(r"^records: 0$", harness.cache_cli(screen, "stats").stdout, re.M), "cache stats after flush")
    harness.expect_pass_new(screen, B, "after cache flush")
    harness.expect_pass_old(screen, B, "after passing again")
    screen.check_no_log(r"verdict cache .*(store|lookup)")   # the daemon never saw an LMDB error
    screen.stop()

    memory = env.smtpscreen(name="memory", postfix=pf, start=False, settings={"cache.backend": "memory"})
    r = harness.cache_cli(memory, "list", rc=1)
    check("cache.backend = memory" in r.stderr and "lmdb" in r.stderr,
          f"a memory cache must be refused with a clear reason: {r.stderr!r}")


harness.run(main)
