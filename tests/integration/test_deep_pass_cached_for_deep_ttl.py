#!/usr/bin/env python3
"""A deep-test pass is cached for cache.deep_ttl (docs/design.md, steps 3 and 6; smtpscreen.ini(5)): with
cache.deep_ttl = 3s, a client that passed in its first session is PASS OLD (handed off
before any greeting of smtpscreen's own) on its next connection; once the deep pass has
expired it gets smtpscreen's own greeting and the deep tests again, although its
pregreet and DNSBL passes still hold; passing again logs PASS NEW and delivers."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.deep_settings({
        "greet.wait": "1s", "cache.deep_ttl": "3s", "cache.dnsbl_min_ttl": "1h", "cache.pregreet_ttl": "1d"}))
    src = "127.0.0.104"

    c = harness.deep_client(screen, src)
    first = harness.unique_marker("ttl-first")
    c.send_mail(first)
    c.check_closed(5, "first session after QUIT")
    screen.wait_for_log(harness.re_pass_new(src, c.local_port))
    passed_at = time.monotonic()
    pf.wait_for_delivery(first)

    s = harness.clean_session(screen, pf, source=src, expect="old", tag="ttl-old")
    # Passes are stored in whole Unix seconds, so a 3s TTL lasts more than 2s, at most 3s.
    check(time.monotonic() - passed_at < 2.0, "setup: the PASS OLD check came too late for a 3s deep_ttl")

    time.sleep(max(0.0, passed_at + 3.3 - time.monotonic()))
    c = harness.deep_client(screen, src)     # smtpscreen's own greeting again, after greet.wait
    port = c.local_port
    again = harness.unique_marker("ttl-again")
    c.send_mail(again)
    c.check_closed(5, "session after the deep pass expired")
    screen.wait_for_log(harness.re_pass_new(src, port))
    screen.check_no_log(harness.re_pass_old(src, port))
    pf.wait_for_delivery(again)
    check(s.port != port, "setup: the same source port twice")
    screen.stop()


harness.run(main)
