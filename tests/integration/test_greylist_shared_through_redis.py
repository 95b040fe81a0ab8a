#!/usr/bin/env python3
"""Greylisting shared through Redis (smtpscreen.ini(5), [greylist] and REDIS RECORDS;
cache/redis_greylist.h): two smtpscreen instances with the deep tests on,
greylist.delay = 3s and cache.backend = redis on one real redis-server, one Postfix
behind both:

  - a new triplet is greylisted on instance A (450 4.2.0, GREYLISTED, Postfix hears
    nothing), and Redis holds it as the documented hash
    `smtpscreen:grey:<network>:<sender>:<recipient>` (first_seen, passed = 0, expires,
    and a Redis expiry at the end of the retry window);
  - an early retry on instance B is refused too, and does not restart the wait (B read
    A's triplet: first_seen stays);
  - the retry after the delay on B is handed off and delivered (PASS NEW on B), and the
    triplet is now passed = 1;
  - the client's next session on A is PASS OLD (its greylist pass is in the shared
    verdict record);
  - with Redis killed, a new triplet on A is let through at once and delivered, not
    greylisted: "cannot answer greylisting ... RCPTs pass without greylisting" is
    logged once for the outage, and smtpscreen_greylist_unanswered_total counts it."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

DELAY = 3.0
GREYLISTED = "450 4.2.0 Greylisted, try again later"
CLIENT = "127.0.0.111"
SENDER, RCPT = "list-bounces+1234@example.org", "user@example.test"
# The sender as the triplet keys it (postgrey's rules: the +extension goes).
KEY = "smtpscreen:grey:127.0.0.0/24:list-bounces@example.org:user@example.test"


def greylisted(screen, source, mail_from, rcpt):
    """One session greylisted at its RCPT TO, then QUIT; returns its port."""
    c = harness.deep_client(screen, source)
    port = c.local_port
    c.ehlo()
    c.expect(f"MAIL FROM:<{mail_from}>", 250)
    reply = c.expect(f"RCPT TO:<{rcpt}>", 450)
    check(reply.text.strip() == GREYLISTED, f"{screen.name}: expected {GREYLISTED!r}, got {reply.text!r}")
    c.expect("QUIT", 221)
    c.close()
    screen.wait_for_log(rf"GREYLISTED {harness.ip_port(source, port)}: from=<{re.escape(mail_from)}>, "
                        rf"to=<{re.escape(rcpt)}>")
    return port


def record(redis):
    raw = redis.command("HGETALL", KEY) or []
    return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}


def main(env):
    redis = env.redis()
    pf = env.postfix()
    stats_port = harness.free_port()
    common = dict(harness.deep_settings({"greet.wait": "1s", "greylist.enable": "on",
                                          "greylist.delay": f"{DELAY:g}s"}), **redis.cache_settings())
    a = env.smtpscreen(name="screenA", postfix=pf, settings=dict(common, **{"stats.listen": f"127.0.0.1:{stats_port}"}))
    b = env.smtpscreen(name="screenB", postfix=pf, settings=common)

    first_port = greylisted(a, CLIENT, SENDER, RCPT)
    first_at, first_ms = time.monotonic(), time.time() * 1000
    check(f"[{CLIENT}]:{first_port}" not in pf.log(), "Postfix saw the greylisted session")
    # The store is written behind the 450, not waited for: it may land a moment later.
    rec = harness.wait_until(lambda: (r := record(redis)) and set(r) == {"first_seen", "passed", "expires"} and r,
                             5, what=f"{KEY} with first_seen, passed and expires in Redis")
    check(rec["passed"] == "0", f"{KEY}: expected first_seen, passed = 0, expires; got {rec} (keys: {redis.keys()})")
    check(abs(int(rec["first_seen"]) - first_ms) < 3000, f"{KEY}: first_seen {rec['first_seen']}, now {first_ms:.0f}")
    window_ms = 2 * 86400 * 1000
    check(int(rec["expires"]) == int(rec["first_seen"]) + window_ms,
          f"{KEY}: expires {rec['expires']}, expected first_seen + greylist.retry_window (2d)")
    pttl = redis.command("PTTL", KEY)
    check(window_ms - 60000 < pttl <= window_ms, f"{KEY}: Redis expiry in {pttl} ms, expected about 2d")

    # B reads A's triplet: an early retry there is refused and leaves the wait alone.
    greylisted(b, CLIENT, SENDER.replace("1234", "1235"), RCPT.upper())
    check(time.monotonic() - first_at < DELAY - 0.3, "setup: the early retry on B came after greylist.delay")
    check(record(redis)["first_seen"] == rec["first_seen"],
          f"B's early retry restarted the wait: first_seen {rec['first_seen']} -> {record(redis)['first_seen']}")

    # The retry after the delay, on B, is delivered.
    time.sleep(max(0.0, first_at + DELAY + 0.3 - time.monotonic()))
    c = harness.deep_client(b, CLIENT)
    retry_port = c.local_port
    marker = harness.unique_marker("grey-redis-retry")
    c.send_mail(marker, mail_from=SENDER.replace("1234", "1236"))
    c.close()
    b.wait_for_log(harness.re_pass_new(CLIENT, retry_port))
    b.check_no_log(rf"GREYLISTED {harness.ip_port(CLIENT, retry_port)}")
    pf.wait_for_delivery(marker)
    harness.wait_until(lambda: record(redis).get("passed") == "1", 5, 0.1, what=f"{KEY} passed = 1")
    check(redis.command("PTTL", KEY) > 30 * 86400 * 1000, f"{KEY}: a passed triplet is kept for greylist.ttl (35d)")

    # Back on A: the client's greylist pass is shared, PASS OLD at once.
    harness.clean_session(a, pf, source=CLIENT, expect="old", tag="grey-redis-old")

    # Redis gone: a new triplet on A is let through, never greylisted, said once.
    redis.kill()
    outsider = "127.0.0.112"
    for n in range(2):
        c = harness.deep_client(a, outsider)
        port = c.local_port
        marker = harness.unique_marker(f"grey-redis-down-{n}")
        c.send_mail(marker, mail_from=f"news{n}@example.com")
        c.close()
        a.wait_for_log(harness.re_pass_new(outsider, port))
        a.check_no_log(rf"GREYLISTED {harness.ip_port(outsider, port)}")
        pf.wait_for_delivery(marker)
    said = re.findall(r"cache: Redis at \S+ cannot answer greylisting: .*; RCPTs pass without greylisting "
                      r"until it answers again", a.log_text())
    check(len(said) == 1, f"the greylisting outage logged {len(said)} times, expected once:\n"
                          f"{harness.tail(a.log_text(), 20)}")
    m = harness.scrape_metrics(stats_port)
    check(m.get("smtpscreen_greylist_unanswered_total") == 2 and m.get("smtpscreen_greylisted_total") == 1,
          f"A's metrics: unanswered {m.get('smtpscreen_greylist_unanswered_total')}, greylisted "
          f"{m.get('smtpscreen_greylisted_total')}")


harness.run(main, timeout=120)
