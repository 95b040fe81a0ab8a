#!/usr/bin/env python3
"""Greylisting at the edge (smtpscreen.ini(5), [greylist]; docs/design.md, "Edge defences"),
with the deep tests on, greylist.delay = 4s and the real Postfix behind:

  - a new client's first attempt gets "450 4.2.0 Greylisted, try again later" at its
    RCPT TO, smtpscreen logs "GREYLISTED [ip]:port: from=<s>, to=<r>", and Postfix
    never hears of the session; the client may still QUIT (221);
  - a retry before the delay, with the addresses in another case, is the same triplet
    and gets the 450 again;
  - smtpscreen restarts (the triplets are kept in the lmdb cache's file);
  - a retry after the delay is handed off, replayed and delivered (PASS NEW);
  - the next session of that client is PASS OLD (no greet wait, no greylisting) and
    delivered, and so is a new recipient in it;
  - another client of the same /24 whose triplet never passed is greylisted (the
    client's pass is its own), while the retried triplet from another address of that
    /24 passes at once (postgrey's subnet lookup);
  - the metrics count the greylisted RCPTs (two before the restart, the
    neighbour's after it), the one retry let through, and the triplets in the table."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

DELAY = 4.0
GREYLISTED = "450 4.2.0 Greylisted, try again later"


def attempt(screen, source, mail_from, rcpt):
    """One session that is greylisted at its RCPT TO, then QUITs; returns its port."""
    c = harness.deep_client(screen, source)
    port = c.local_port
    c.ehlo()
    c.expect(f"MAIL FROM:<{mail_from}>", 250)
    reply = c.expect(f"RCPT TO:<{rcpt}>", 450)
    check(reply.text.strip() == GREYLISTED, f"greylisted RCPT: expected {GREYLISTED!r}, got {reply.text!r}")
    c.expect("QUIT", 221)
    c.check_closed(5, "greylisted session after QUIT")
    c.close()
    screen.wait_for_log(rf"GREYLISTED {harness.ip_port(source, port)}: from=<{re.escape(mail_from)}>, "
                        rf"to=<{re.escape(rcpt)}>")
    screen.wait_for_log(harness.re_disconnect(source, port) + r" quit after")
    return port


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    stats_port = harness.free_port()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.deep_settings({
        "greet.wait": "1s", "greylist.enable": "on", "greylist.delay": f"{DELAY:g}s",
        "stats.listen": f"127.0.0.1:{stats_port}"}))
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics")
    src = "127.0.0.105"

    first_port = attempt(screen, src, "sender@example.org", "user@example.test")
    first_at = time.monotonic()
    early_port = attempt(screen, src, "Sender@EXAMPLE.org", "USER@example.test")
    check(time.monotonic() - first_at < DELAY - 0.5, "setup: the early retry came too late for greylist.delay")

    # Nothing of the greylisted sessions reached Postfix.
    for port in (first_port, early_port):
        check(f"[{src}]:{port}" not in pf.log(),
              f"Postfix saw the greylisted session from port {port}:\n{harness.tail(pf.log(), 20)}")
    screen.check_no_log(harness.re_pass_new(src, first_port))
    screen.check_no_log(harness.re_pass_new(src, early_port))
    m = harness.scrape_metrics(stats_port)
    check(m.get("smtpscreen_greylisted_total") == 2 and m.get("smtpscreen_greylist_passed_total") == 0 and
          m.get("smtpscreen_greylist_triplets") == 1,
          f"before the retry: greylisted {m.get('smtpscreen_greylisted_total')}, passed "
          f"{m.get('smtpscreen_greylist_passed_total')}, triplets {m.get('smtpscreen_greylist_triplets')}")

    # The wait survives a restart: the triplet is read back from the cache file.
    screen.stop()
    since = screen.log_size()
    screen.start()
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics", since=since)

    time.sleep(max(0.0, first_at + DELAY + 0.3 - time.monotonic()))
    c = harness.deep_client(screen, src)
    retry_port = c.local_port
    marker = harness.unique_marker("grey-retry")
    c.send_mail(marker)
    c.check_closed(5, "retry after QUIT")
    c.close()
    screen.wait_for_log(harness.re_pass_new(src, retry_port))
    screen.check_no_log(rf"GREYLISTED {harness.ip_port(src, retry_port)}")
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(src, retry_port))

    # The client's pass is cached: PASS OLD, at once, and greylisting asks nothing more
    # of it, whatever the recipient.
    s = harness.clean_session(screen, pf, source=src, expect="old", tag="grey-old")
    c = harness.SmtpClient(screen.port, source=src)
    greeting = c.read_greeting(timeout=10)
    check(greeting.code == 220 and greeting.lines[0].startswith("220 "),
          f"cached client: the backend's greeting at once, got {greeting.text!r}")
    other = harness.unique_marker("grey-other-rcpt")
    c.send_mail(other, rcpts=("other@example.test",))
    c.close()
    pf.wait_for_delivery(other)
    check(s.port != retry_port, "setup: the same source port twice")

    # Another client of the same /24: its own first attempt of a new triplet is
    # greylisted, while the triplet that passed passes from it at once.
    neighbour = "127.0.0.106"
    attempt(screen, neighbour, "someone@example.org", "user@example.test")
    c = harness.deep_client(screen, neighbour)
    n_port = c.local_port
    shared = harness.unique_marker("grey-subnet")
    c.send_mail(shared)
    c.close()
    screen.wait_for_log(harness.re_pass_new(neighbour, n_port))
    pf.wait_for_delivery(shared)

    m = harness.scrape_metrics(stats_port)
    check(m.get("smtpscreen_greylisted_total") == 1, f"smtpscreen_greylisted_total: {m.get('smtpscreen_greylisted_total')}")
    check(m.get("smtpscreen_greylist_passed_total") == 1,
          f"smtpscreen_greylist_passed_total: {m.get('smtpscreen_greylist_passed_total')}")
    check(m.get("smtpscreen_greylist_triplets") == 2,
          f"smtpscreen_greylist_triplets: {m.get('smtpscreen_greylist_triplets')}")
    check('smtpscreen_test_failures_total{test="greylist"}' not in m, "greylisting is counted as a failed test")
    screen.stop()


harness.run(main)
