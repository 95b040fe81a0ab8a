#!/usr/bin/env python3
"""A client that passed every test is remembered in the LMDB cache file (docs/design.md, step 3):
after smtpscreen is stopped (SIGTERM, exit 0) and started again on the same
cache.path, the client is logged PASS OLD and handed off at once, without the greet
wait, and its mail arrives. Another client, never seen, still gets the greet wait."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GREET_WAIT = 2.0


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={
        "greet.wait": f"{int(GREET_WAIT)}s", "cache.backend": "lmdb"})
    harness.clean_session(screen, pf, source="127.0.0.7", expect="new", tag="first")
    screen.stop()
    check(os.path.exists(screen.settings["cache.path"]),
          f"cache.path {screen.settings['cache.path']} does not exist after a pass")

    screen.start()
    since = screen.log_size()
    s = harness.clean_session(screen, pf, source="127.0.0.7", expect="old", tag="after-restart")
    screen.check_no_log(harness.re_pass_new("127.0.0.7"), since=since)
    screen.check_no_log(harness.re_pregreet("127.0.0.7"), since=since)
    check(s.t_final < 1.0, f"PASS OLD client waited {s.t_final:.2f}s for the 220")

    # A client never seen is still screened.
    harness.clean_session(screen, pf, source="127.0.0.8", expect="new", tag="stranger")
    screen.stop()


harness.run(main)
