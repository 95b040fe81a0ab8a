#!/usr/bin/env python3
"""The auto-ban (ban.after; docs/design.md, "Edge defences"; issue 19), with the real
smtpscreen (lmdb cache, greet.action = drop) in front of the private Postfix:

  - a pregreet bot that fails 3 times within ban.after's 3/30s is banned: exactly one
    'BANNED [ip]:port until TIME after 3 failures' line (TIME one ban.time ahead, in
    UTC); from then on each of its connections gets '521 5.7.1 Service unavailable'
    as its only line, at once (no '220-' greet wait), then the close, and ends
    'DISCONNECT ... banned'; no BANNED line more, and the bot never reaches Postfix;
  - a clean client of another address still delivers meanwhile;
  - the metrics count one ban and each refused connection;
  - the ban survives a restart (the same lmdb file), and is not logged again;
  - `smtpscreen cache list` and `show IP` show it; `cache delete IP` lifts it: the
    client's next connection gets the greet wait again and passes (PASS NEW);
  - a second instance with ban.time = 3s: after the first ban ends, the bot's next 3
    failures ban it for twice as long (6s), 'ban 2 in a row' in `cache show`."""
import calendar
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BOT = "127.0.0.61"
CLEAN = "127.0.0.62"
REPEATER = "127.0.0.63"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def banned_lines(screen, source):
    return [ln for ln in screen.log_lines() if re.search(rf"BANNED {harness.ip_port(source)} ", ln)]


def ban_line_until(line, source=BOT):
    """The Unix time of a BANNED line's TIME, and its count; checks the line's form."""
    m = re.search(rf"BANNED {harness.ip_port(source)} until ({STAMP}) after (\d+) failures$", line)
    check(m, f"BANNED line not in the documented form: {line!r}")
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ")), int(m.group(2))


def metric(samples, name):
    return samples.get(name, 0.0)


def main(env):
    pf = env.postfix()
    stats_port = harness.free_port()
    screen = env.smtpscreen(postfix=pf, settings={
        "greet.action": "drop", "greet.wait": "1s", "ban.after": "3/30s", "ban.time": "1h",
        "stats.listen": f"127.0.0.1:{stats_port}"})
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics")

    # Two failures: not banned yet (the third connection still gets the greet wait).
    harness.pregreet_dropped(screen, BOT)
    harness.pregreet_dropped(screen, BOT)
    check(banned_lines(screen, BOT) == [], "banned after 2 failures; ban.after is 3/30s")
    banned_at = time.time()
    harness.pregreet_dropped(screen, BOT)
    screen.wait_for_log(rf"BANNED {harness.ip_port(BOT)} until ", timeout=5)
    until, failures = ban_line_until(banned_lines(screen, BOT)[0])
    check(failures == 3, f"the BANNED line must count 3 failures, says {failures}")
    check(abs(until - (banned_at + 3600)) < 5,
          f"a first ban lasts ban.time (1h): until {until}, expected about {banned_at + 3600:.0f}")

    for _ in range(4):
        harness.refused_as_banned(screen, BOT)
    harness.clean_session(screen, pf, source=CLEAN, expect="new", tag="bystander")
    check(len(banned_lines(screen, BOT)) == 1, f"one BANNED line per ban, got {banned_lines(screen, BOT)}")
    pregreets = [ln for ln in screen.log_lines() if re.search(harness.re_pregreet(BOT), ln)]
    check(len(pregreets) == 3, f"a banned client gets no greet wait: {len(pregreets)} PREGREET lines, expected 3")
    check(BOT not in pf.log(), "Postfix saw the banned bot")

    samples = harness.scrape_metrics(stats_port)
    check(metric(samples, "smtpscreen_bans_total") == 1,
          f"smtpscreen_bans_total: {metric(samples, 'smtpscreen_bans_total')}, expected 1")
    check(metric(samples, "smtpscreen_banned_connections_total") == 4,
          f"smtpscreen_banned_connections_total: {metric(samples, 'smtpscreen_banned_connections_total')}, "
          f"expected 4")
    check(metric(samples, 'smtpscreen_sessions_total{outcome="banned"}') == 4,
          "smtpscreen_sessions_total{outcome=\"banned\"} must count the 4 refused connections")

    # A restart on the same lmdb file keeps the ban, and does not log it again.
    screen.stop()
    screen.start()
    since = screen.log_size()
    harness.refused_as_banned(screen, BOT)
    screen.check_no_log(r"BANNED ", since=since)
    check(BOT not in pf.log(), "Postfix saw the banned bot")

    # The cache tools see the ban beside the verdicts, and lift it.
    listed = harness.cache_cli(screen, "list").stdout.splitlines()
    check(any(re.fullmatch(rf"{re.escape(BOT)} ban until={STAMP} count=1 failures=3", ln) for ln in listed),
          f"cache list must show the ban: {listed}")
    check(any(ln.startswith(CLEAN + " pregreet=") for ln in listed), f"cache list lost the verdicts: {listed}")
    shown = harness.cache_cli(screen, "show", BOT).stdout
    check(re.search(rf"^  ban +banned until {STAMP} \(\d+s left\), ban 1 in a row, after 3 failures; "
                    rf"remembered until {STAMP}$", shown, re.M), f"cache show {BOT}: {shown!r}")
    lifted = harness.cache_cli(screen, "delete", BOT).stdout
    check(f"lifted the ban of {BOT}" in lifted, f"cache delete {BOT}: {lifted!r}")
    harness.cache_cli(screen, "show", BOT, rc=1)
    harness.expect_pass_new(screen, BOT, "after its ban was lifted")
    check(len(banned_lines(screen, BOT)) == 1, "lifting a ban must log no BANNED line")
    screen.stop()

    # Repeat bans double: ban.time = 3s, so the first one ends within the test.
    double = env.smtpscreen(name="double", postfix=pf, settings={
        "greet.action": "drop", "greet.wait": "1s", "ban.after": "3/30s", "ban.time": "3s",
        "ban.max_time": "1h"})
    for _ in range(3):
        harness.pregreet_dropped(double, REPEATER)
    double.wait_for_log(rf"BANNED {harness.ip_port(REPEATER)} until ", timeout=5)
    first_at = time.time()
    harness.refused_as_banned(double, REPEATER)
    first_until, _ = ban_line_until(banned_lines(double, REPEATER)[0], REPEATER)
    check(abs(first_until - (first_at + 3)) < 2, f"first ban: until {first_until}, expected about now + 3s")
    harness.wait_until(lambda: time.time() > first_until + 1.2, 10, 0.1, what="the first 3s ban to end")
    for _ in range(3):
        harness.pregreet_dropped(double, REPEATER)
    harness.wait_until(lambda: len(banned_lines(double, REPEATER)) == 2, 5, 0.05, what="the second BANNED line")
    second_at = time.time()
    second_until, _ = ban_line_until(banned_lines(double, REPEATER)[1], REPEATER)
    check(abs((second_until - second_at) - 6) < 2,
          f"the repeat ban must last twice ban.time (6s): it ends {second_until - second_at:.1f}s after it began")
    harness.refused_as_banned(double, REPEATER)
    shown = harness.cache_cli(double, "show", REPEATER).stdout
    check(re.search(r"ban 2 in a row, after 3 failures", shown), f"cache show after the repeat ban: {shown!r}")
    check(REPEATER not in pf.log(), "Postfix saw the banned bot")
    double.stop()


harness.run(main, timeout=150)
