#!/usr/bin/env python3
"""A client listed in a DNSBL (rbldnsd serving bl.test and bl2.test) is screened out
(docs/design.md, step 5 and "Log lines"):
  - dnsbl.action = enforce: 'DNSBL rank N' is logged, the proxy finishes the greeting
    itself without waiting out greet.wait (the verdict cannot change), and every RCPT
    gets '550 5.7.1 Service unavailable; client [ip] blocked using <zone>' naming the
    highest-weighted listed zone, as dnsbl.reply_map names it; NOQUEUE is logged;
  - dnsbl.action = drop: '521 5.7.1 Service unavailable' at once and close;
and the mail never arrives; Postfix never sees the client."""
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
    reply_map = os.path.join(env.dir, "reply_map")
    with open(reply_map, "w") as f:
        f.write("# zone  public name\nbl2.test   bl2.example.net\n")
    sites = "bl.test=127.0.0.[2..20]*1, bl2.test*2"
    enforce = env.smtpscreen(postfix=pf, dns=dns, name="enforce", sites=sites, settings={
        "dnsbl.action": "enforce", "greet.wait": f"{int(GREET_WAIT)}s",
        "dnsbl.reply_map": reply_map})
    drop = env.smtpscreen(postfix=pf, dns=dns, name="drop", sites=sites, settings={
        "dnsbl.action": "drop", "greet.wait": f"{int(GREET_WAIT)}s"})

    def enforced(ip, shown_by_rank, marker):
        """shown_by_rank: for each rank the verdict may be logged with, the zones the RCPT
        reply may name."""
        c = harness.SmtpClient(enforce.port, source=ip, timeout=15)
        port = c.local_port
        greeting = c.read_reply(timeout=GREET_WAIT + 5)
        check(greeting.code == 220, f"{ip}: greeting {greeting.text!r}")
        check("backend.test" not in greeting.text, f"{ip}: a listed client got the backend's banner: {greeting.text!r}")
        check(c.elapsed() < GREET_WAIT - 1.0,
              f"{ip}: the listed client was kept {c.elapsed():.2f}s; the verdict was final as soon as "
              f"the DNS answered, it must not wait out greet.wait ({GREET_WAIT}s)")
        c.expect("EHLO bot.example", 250)
        c.expect("MAIL FROM:<bot@example.org>", 250)
        rcpt = c.expect("RCPT TO:<user@example.test>", 550)
        data = c.cmd("DATA")
        check(data.code >= 500, f"{ip}: DATA after every RCPT was rejected must fail, got {data.text!r}")
        if data.code == 354:  # make sure it would not be delivered either
            c.send(harness.message_text(marker) + ".\r\n")
            c.read_reply()
        c.expect("QUIT", 221)
        c.check_closed(5, "after QUIT")
        # The verdict may be acted on as soon as the score reaches the threshold (docs/design.md,
        # step 5), so the logged rank may be the sum of the answers in by then.
        enforce.wait_for_log(harness.re_connect(ip, port))
        ranks = "|".join(str(r) for r in shown_by_rank)
        rank = int(enforce.wait_for_log(harness.re_dnsbl_rank(ip, f"({ranks})", port)).group(1))
        # The reply names the highest-weighted zone listed by the time of the RCPT: once the
        # verdict was taken on every answer (the highest rank), that zone; before, whichever
        # had answered by then (a loaded machine may answer the second zone after the RCPT).
        replies = [f"550 5.7.1 Service unavailable; client [{ip}] blocked using {zone}" for zone in shown_by_rank[rank]]
        check(rcpt.final in replies, f"{ip}: RCPT after 'DNSBL rank {rank}': got {rcpt.text!r}, expected one of {replies}")
        reply = rcpt.final
        enforce.wait_for_log(harness.re_noqueue(ip, re.escape(
            f"{reply}; from=<bot@example.org>, to=<user@example.test>, proto=ESMTP, helo=<bot.example>"), port))
        enforce.wait_for_log(harness.re_disconnect(ip, port))
        enforce.check_no_log(harness.re_pass_new(ip))

    marker = harness.unique_marker("listed")
    c = harness.SmtpClient(drop.port, source="127.0.0.10")
    port = c.local_port
    reply = c.read_reply(timeout=GREET_WAIT + 5)
    check(reply.code == 521 and reply.final.startswith("521 5.7.1 Service unavailable"),
          f"drop: expected '521 5.7.1 Service unavailable', got {reply.text!r}")
    check(c.elapsed() < GREET_WAIT - 1.0,
          f"drop: 521 came after {c.elapsed():.2f}s; a listed client is dropped as soon as the verdict is "
          f"final, not after greet.wait ({GREET_WAIT}s)")
    c.check_closed(3, "drop after 521")
    drop.wait_for_log(harness.re_connect("127.0.0.10", port))
    drop.wait_for_log(harness.re_dnsbl_rank("127.0.0.10", 1, port))
    drop.wait_for_log(harness.re_disconnect("127.0.0.10", port))

    enforced("127.0.0.10", {1: ("bl.test",)}, marker)              # only bl.test
    # bl.test*1 + bl2.test*2: the highest-weighted zone is named, as reply_map names it.
    enforced("127.0.0.2", {1: ("bl.test", "bl2.example.net"), 3: ("bl2.example.net",)}, marker)

    pf.check_not_delivered(marker)
    for ip in ("127.0.0.10", "127.0.0.2"):
        check(f"[{ip}]" not in pf.log(), f"Postfix saw listed client {ip}: it was handed off")
    enforce.stop()
    drop.stop()


harness.run(main)
