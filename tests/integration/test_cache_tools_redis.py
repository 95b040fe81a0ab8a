#!/usr/bin/env python3
"""cache.backend = redis with a real redis-server (on its unix socket)
and a real Postfix: the daemon keeps its passes in Redis in the documented format
(smtpscreen.ini(5), REDIS RECORDS: a hash `smtpscreen:<address>` of pass-until
milliseconds that Redis expires with its last pass), so a record another tool writes
with redis-cli makes that client PASS OLD. `smtpscreen cache list|show|delete|flush|
stats` work on it while the daemon runs; `flush` deletes only the prefix's keys. When
Redis is killed, clients are still delivered (as cache misses), the daemon logs the
outage once and its return once, and `--check` warns without failing."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

A, B, C, D = "127.0.0.90", "127.0.0.91", "127.0.0.92", "127.0.0.93"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def main(env):
    redis = env.redis(unix=True)
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={"dnsbl.sites": None, **redis.cache_settings(use_unix=True)})
    harness.expect_pass_new(screen, A, "first visit")
    harness.expect_pass_new(screen, B, "first visit")
    harness.expect_pass_old(screen, A, "second visit")

    # The record as other tools see it.
    check(redis.command("TYPE", f"smtpscreen:{A}") == "hash", f"smtpscreen:{A} must be a hash")
    fields = [f.decode() for f in redis.command("HGETALL", f"smtpscreen:{A}")]
    record = dict(zip(fields[0::2], fields[1::2]))
    now_ms = time.time() * 1000
    check(set(record) == {"pregreet"} and now_ms < int(record["pregreet"]) <= now_ms + 86400 * 1000 + 5000,
          f"smtpscreen:{A} must hold pregreet=<pass-until ms, a day ahead>: {record}")
    expire_at = redis.command("PEXPIRETIME", f"smtpscreen:{A}")
    check(expire_at == int(record["pregreet"]), f"the key must expire with its last pass: {expire_at} {record}")

    listed = harness.cache_cli(screen, "list").stdout.splitlines()
    check(len(listed) == 2, f"cache list: expected 2 records, got {listed}")
    for ip, line in zip((A, B), listed):
        check(re.fullmatch(rf"{re.escape(ip)} pregreet={STAMP} dnsbl=- pipelining=- non_smtp=- bare_newline=- greylist=-",
                           line), f"cache list: unexpected line {line!r}")
    shown = harness.cache_cli(screen, "show", A).stdout
    check(re.search(rf"^  pregreet +passed, valid until {STAMP} \(\d+s left\)$", shown, re.M), f"show: {shown!r}")
    missing = harness.cache_cli(screen, "show", C, rc=1)
    check(f"{C} is not in the cache" in missing.stderr, f"cache show {C}: {missing.stderr!r}")

    # Pre-seeded by another tool with the commands the man page shows: PASS OLD without
    # a greet wait.
    until = str(int(now_ms) + 3600 * 1000)
    redis.command("HSET", f"smtpscreen:{C}", "pregreet", until)
    redis.command("PEXPIREAT", f"smtpscreen:{C}", until)
    harness.expect_pass_old(screen, C, "pre-seeded with redis-cli")

    stats = harness.cache_cli(screen, "stats").stdout
    check(re.search(r"^cache: redis:", stats, re.M) and re.search(r"^records: 3$", stats, re.M)
          and re.search(r"^valid pregreet passes: 3$", stats, re.M), f"cache stats: {stats!r}")

    check(f"deleted {A}" in harness.cache_cli(screen, "delete", A).stdout, "cache delete")
    harness.cache_cli(screen, "delete", A, rc=1)
    harness.expect_pass_new(screen, A, "after cache delete")
    harness.expect_pass_old(screen, B, "after deleting the other client")

    redis.command("SET", "other:keep-me", "x")
    flushed = harness.cache_cli(screen, "flush")
    check(re.search(r"flushed redis:.*: 3 records deleted", flushed.stdout), f"cache flush: {flushed.stdout!r}")
    check(harness.cache_cli(screen, "list").stdout == "", "cache list after flush must print nothing")
    check(redis.command("GET", "other:keep-me") == b"x", "flush must leave keys without the prefix alone")
    harness.expect_pass_new(screen, B, "after cache flush")

    # Redis gone: sessions go on as misses (screened, delivered), one line for the outage.
    redis.kill()
    harness.expect_pass_new(screen, D, "Redis down")
    harness.expect_pass_new(screen, D, "Redis down, second visit: nothing was stored")
    screen.wait_for_log(r"warning: cache: Redis at .* unreachable: ")
    check(len(re.findall(r"unreachable", screen.log_text())) == 1, "one log line per outage, not per session")
    r = harness.run_smtpscreen(["-c", screen.config_path, "--check"])
    check(r.returncode == 0 and re.search(r"warning: cache.backend = redis: cannot reach Redis", r.stderr),
          f"--check must warn (and pass) while Redis is down: {r.returncode} {r.stderr!r}")
    harness.cache_cli(screen, "list", rc=1)

    redis.start()
    screen.wait_for_log(r"cache: Redis at .* is back", timeout=15)
    harness.expect_pass_new(screen, D, "Redis back, empty")
    harness.expect_pass_old(screen, D, "Redis back, remembered")
    screen.stop()


harness.run(main)
