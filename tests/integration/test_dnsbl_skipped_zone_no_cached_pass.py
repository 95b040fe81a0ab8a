#!/usr/bin/env python3
"""A DNSBL zone that stops answering is skipped, its clients are let in (fail open,
docs/design.md, step 5), but a lookup that timed out or was skipped earns no cached DNSBL pass: once
the zone answers again, a listed client is rejected (bench/README.md, findings under
load, item 1).

A scripted DNS server answers dead.test with NXDOMAIN: a clean client passes and its
pass is cached (the control). Then the zone goes silent: five clients at once wait out
dnsbl.timeout and get in, and 'skipping it for 60s' is logged. A client the zone would
list comes twice during the skip: both times it is let in after the greet wait alone
(the zone is not asked), and the second time it is not PASS OLD (no pass was cached the
first time). Then the zone lists everyone and smtpscreen restarts on the same cache (a
fresh resolver, no skip): the listed client gets 521, the clean one is still PASS OLD."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ZONE = "dead.test"
GREET_WAIT = 1.0
DNS_TIMEOUT = 2.0
CLEAN = "127.0.20.1"
LISTED = "127.0.20.50"


def greet(screen, source):
    c = harness.SmtpClient(screen.port, source=source, timeout=10)
    port = c.local_port
    reply = c.read_greeting(timeout=10)
    t_final = reply.t_final
    c.close()
    return reply, t_final, port


def asked(dns, ip):
    prefix = ".".join(reversed(ip.split("."))) + "."
    return [q for q in dns.queries_for(ZONE) if q[1].startswith(prefix)]


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    dns = harness.scripted_dns(env, {ZONE: "nxdomain"})
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": f"{int(GREET_WAIT)}s",
        "dnsbl.servers": f"127.0.0.1:{dns.port}", "dnsbl.sites": ZONE, "dnsbl.timeout": f"{int(DNS_TIMEOUT)}s",
        "dnsbl.action": "drop"})  # the harness's LMDB cache, which outlives a restart

    reply, _, port = greet(screen, CLEAN)
    check(reply.code == 220, f"clean client while the zone answers: {reply.text!r}")
    screen.wait_for_log(harness.re_pass_new(CLEAN, port))

    # The zone stops answering.
    dns.zones[ZONE] = "silent"
    out = {}

    def waiting(ip):
        try:
            out[ip] = greet(screen, ip)
        except Exception as e:  # reported below
            out[ip] = (None, repr(e), None)

    burst = [f"127.0.20.{i}" for i in range(10, 15)]
    threads = [threading.Thread(target=waiting, args=(ip,), daemon=True) for ip in burst]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for ip in burst:
        reply, t_final, _ = out.get(ip, (None, "no result", None))
        check(reply is not None and reply.code == 220,
              f"{ip}: a lookup that times out counts as not listed; got {reply and reply.text!r} ({t_final})")
        check(t_final >= DNS_TIMEOUT - 0.2, f"{ip}: let in after {t_final:.2f}s, before dnsbl.timeout")
    screen.wait_for_log(rf"dnsbl zone {ZONE} timed out 5 times in a row; skipping it for 60s")

    # During the skip: let in after the greet wait, the zone not asked, no pass cached.
    for attempt in (1, 2):
        reply, t_final, port = greet(screen, LISTED)
        check(reply.code == 220, f"listed client during the skip (attempt {attempt}): {reply.text!r}")
        check(t_final >= GREET_WAIT - 0.15,
              f"attempt {attempt}: 220 after {t_final:.2f}s, before the greet wait ended: PASS OLD from a DNSBL "
              f"pass cached while the zone was skipped?")
        check(t_final <= GREET_WAIT + 0.6,
              f"attempt {attempt}: with the zone skipped the client waited {t_final:.2f}s, more than greet.wait")
        screen.wait_for_log(harness.re_pass_new(LISTED, port))
        screen.check_no_log(harness.re_pass_old(LISTED))
    check(not asked(dns, LISTED), f"the skipped zone was asked about {LISTED}: {asked(dns, LISTED)}")

    # The zone answers again (and lists everyone); a restart drops the skip, not the cache.
    dns.zones[ZONE] = "listed"
    screen.stop()
    screen.start()
    reply, t_final, port = greet(screen, LISTED)
    check(reply.code == 521 and reply.final.startswith("521 5.7.1"),
          f"{LISTED} was let in during the skip; once the zone lists it, it must be rejected, but it got "
          f"{reply.text!r} after {t_final:.2f}s (a DNSBL pass cached from a skipped lookup?)")
    since = screen.log_offset_at_start
    screen.wait_for_log(harness.re_dnsbl_rank(LISTED, 1, port), since=since)
    screen.check_no_log(harness.re_pass_old(LISTED), since=since)
    check(asked(dns, LISTED), f"{LISTED} was rejected without the zone being asked")

    # The control: a pass earned from a real answer is remembered across the restart.
    reply, t_final, port = greet(screen, CLEAN)
    check(reply.code == 220 and t_final < GREET_WAIT - 0.3,
          f"clean client with a cached pass: {reply.text!r} after {t_final:.2f}s (expected PASS OLD at once)")
    screen.wait_for_log(harness.re_pass_old(CLEAN, port), since=since)
    harness.log(f"skip logged; {LISTED} let in twice during it (no PASS OLD), rejected once the zone answers")


harness.run(main)
