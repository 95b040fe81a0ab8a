#!/usr/bin/env python3
"""dnsbl.allowlist_threshold works as postscreen_dnsbl_allowlist_threshold (docs/design.md,
step 5). Sites: bl.test*2 and wl.test=127.0.0.3*-5; threshold 1.
  - allowlist_threshold = -1: a client in wl.test only (score -5) passes at once,
    without waiting out greet.wait, is handed off and its mail arrives; a client in
    both lists (2 - 5 = -3) too; a client in bl.test only (score 2) is rejected.
  - allowlist_threshold = 0 (off): the allowlisted client is not fast-tracked: it waits
    the whole greet wait, then passes (its score -5 is below the threshold)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GREET_WAIT = 3.0


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    sites = "bl.test=127.0.0.[2..30]*2, wl.test=127.0.0.3*-5"
    fast = env.smtpscreen(postfix=pf, dns=dns, name="fast", sites=sites, settings={
        "greet.wait": f"{int(GREET_WAIT)}s", "dnsbl.allowlist_threshold": "-1"})
    off = env.smtpscreen(postfix=pf, dns=dns, name="off", sites=sites, settings={
        "greet.wait": f"{int(GREET_WAIT)}s", "dnsbl.allowlist_threshold": "0"})

    for ip, rank in (("127.0.0.20", -5), ("127.0.0.21", -3)):
        s = harness.clean_session(fast, pf, source=ip, expect="allowlisted", tag="dnswl")
        check(s.t_final < GREET_WAIT - 1.0,
              f"{ip} (score {rank} <= allowlist_threshold -1) got the backend's 220 after "
              f"{s.t_final:.2f}s: it must pass at once, not after greet.wait ({GREET_WAIT}s)")
        fast.wait_for_log(harness.re_dnsbl_rank(ip, rank, s.port))
        fast.wait_for_log(harness.re_pass_new(ip, s.port))

    # Listed only in the DNSBL: rejected (enforce is the default action).
    c = harness.SmtpClient(fast.port, source="127.0.0.10", timeout=15)
    port = c.local_port
    greeting = c.read_reply(timeout=GREET_WAIT + 5)
    check("backend.test" not in greeting.text, f"a listed client got the backend's banner: {greeting.text!r}")
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550,
             "^" + re.escape("550 5.7.1 Service unavailable; client [127.0.0.10] blocked using bl.test"))
    c.expect("QUIT", 221)
    fast.wait_for_log(harness.re_dnsbl_rank("127.0.0.10", 2, port))
    fast.wait_for_log(harness.re_disconnect("127.0.0.10", port))

    # Allowlist threshold off: the DNSWL listing only lowers the score.
    s = harness.clean_session(off, pf, source="127.0.0.20", expect="new", tag="dnswl-off")
    check(s.t_final >= GREET_WAIT - 0.15,
          f"with dnsbl.allowlist_threshold = 0 the allowlisted client must wait greet.wait, "
          f"got the 220 after {s.t_final:.2f}s")
    fast.stop()
    off.stop()


harness.run(main)
