#!/usr/bin/env python3
"""Bans through Redis (cache.backend = redis; smtpscreen.ini(5), BANS; issue 19): two
smtpscreen instances share one real redis-server in front of one Postfix, with
ban.after = 3/30s and greet.action = drop.

  - a pregreet bot fails twice on the first instance and once on the second: the
    failures are counted together in Redis (the key smtpscreen:fail:<address>, 3,
    expiring within ban.after's period), so the third bans it, though neither
    instance saw three: one 'BANNED' line, on the first, and the documented key
    smtpscreen:ban:<address>, a hash whose 'until' is the ban's end in Unix
    milliseconds (one ban.time ahead) with count 1 and failures 3, expiring
    (PEXPIREAT) ban.max_time after that end;
  - the second instance, which never saw the ban made, refuses it at once with
    '521 5.7.1 Service unavailable' alone ('DISCONNECT ... banned'), logs no BANNED
    line of its own, and the bot never reaches Postfix;
  - `smtpscreen cache list` on the second instance's config lists the ban, `cache
    delete IP` lifts it (the key is gone), and both instances then let the client in
    again: it passes on the first (PASS NEW) and is PASS OLD on the second."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BOT = "127.0.0.71"
BAN_SETTINGS = {"greet.action": "drop", "greet.wait": "1s", "ban.after": "3/30s", "ban.time": "1h",
                "ban.max_time": "1d"}


def main(env):
    redis = env.redis()
    pf = env.postfix()
    screens = [env.smtpscreen(name=name, postfix=pf, settings=dict(BAN_SETTINGS, **redis.cache_settings()))
               for name in ("screen1", "screen2")]
    one, two = screens
    key = f"smtpscreen:ban:{BOT}"

    # One, two, one: HAProxy's leastconn spreads a bot's connections so.
    for screen in (one, two, one):
        harness.pregreet_dropped(screen, BOT)
    banned_at = time.time()
    one.wait_for_log(rf"BANNED {harness.ip_port(BOT)} until \S+ after 3 failures", timeout=5)
    harness.wait_until(lambda: redis.command("EXISTS", key) == 1, 5, 0.05, what=f"the ban's key {key} in Redis")
    failures = f"smtpscreen:fail:{BOT}"
    check(redis.command("GET", failures) == b"3", f"{failures}: {redis.command('GET', failures)!r}, expected 3")
    check(0 < redis.command("PTTL", failures) <= 30000, f"{failures} must expire within ban.after's 30s")
    record = redis.command("HGETALL", key)
    fields = {record[i].decode(): record[i + 1].decode() for i in range(0, len(record), 2)}
    check(set(fields) == {"until", "count", "failures"}, f"{key}: unexpected fields {fields}")
    until_ms = int(fields["until"])
    check(abs(until_ms / 1000 - (banned_at + 3600)) < 5,
          f"{key}: until {until_ms} ms, expected about now + 1h ({(banned_at + 3600) * 1000:.0f})")
    check(fields["count"] == "1" and fields["failures"] == "3", f"{key}: {fields}")
    pttl = redis.command("PTTL", key)
    expected = until_ms + 86400 * 1000 - time.time() * 1000
    check(abs(pttl - expected) < 5000,
          f"{key}: Redis expiry in {pttl} ms, expected ban.max_time after the ban's end ({expected:.0f} ms)")

    # The other instance never saw the bot fail: Redis tells it.
    harness.refused_as_banned(two, BOT)
    harness.refused_as_banned(one, BOT)
    harness.refused_as_banned(two, BOT)
    two.check_no_log(r"BANNED ")
    check(len([ln for ln in one.log_lines() if "BANNED " in ln]) == 1, "one BANNED line for one ban")
    check(BOT not in pf.log(), "Postfix saw the banned bot")

    listed = harness.cache_cli(two, "list").stdout.splitlines()
    check(any(re.fullmatch(rf"{re.escape(BOT)} ban until=\S+ count=1 failures=3", ln) for ln in listed),
          f"cache list on Redis must show the ban: {listed}")
    shown = harness.cache_cli(two, "show", BOT).stdout
    check(re.search(r"^  ban +banned until \S+ \(\d+s left\), ban 1 in a row, after 3 failures$", shown, re.M),
          f"cache show {BOT}: {shown!r}")
    lifted = harness.cache_cli(two, "delete", BOT).stdout
    check(f"lifted the ban of {BOT}" in lifted, f"cache delete {BOT}: {lifted!r}")
    check(redis.command("EXISTS", key) == 0, f"{key} must be gone once the ban is lifted")
    harness.expect_pass_new(one, BOT, "screen1, after the ban was lifted")
    harness.expect_pass_old(two, BOT, "screen2, once screen1 passed it (the shared cache)")
    for screen in screens:
        screen.stop()


harness.run(main, timeout=120)
