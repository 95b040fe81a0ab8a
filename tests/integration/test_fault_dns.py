#!/usr/bin/env python3
"""DNS faults (docs/design.md, step 5, issue 6): whatever the DNSBL server does, a lookup that
fails counts as not listed, is logged once ('dnsbl query <name> failed: <reason>'), and
no session waits longer than dnsbl.timeout (2s here; greet.wait 1s).
A scripted UDP DNS server answers each zone its own way; one smtpscreen per zone, one
clean client each (all at once), which must get PASS NEW and the backend's 220 within
dnsbl.timeout + 0.6s and deliver its message:
  down (nothing listens), silent, SERVFAIL, REFUSED, truncated (TC bit, TCP refused),
  garbage after the query id, garbage after an intact question, an A record whose
  RDLENGTH overruns the packet, a 5-byte datagram, an answer with the wrong query id,
  an answer that comes after 5s;
NXDOMAIN and NOERROR/no data are "not listed" answers: no failure line, and the verdict
comes when the greet wait ends. A control zone that answers 127.0.0.2 gets the client
rejected (the scripted server is really asked). Then twenty clients at once against the
silent server: each waits at most dnsbl.timeout, each query is logged once, the zone is
skipped after repeated timeouts, and the next client then waits only the greet wait."""
import os
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GREET_WAIT = 1.0
DNS_TIMEOUT = 2.0

# zone: (mode, a failure line expected, the reason it names (regex) or None)
CASES = {
    "down.test": ("(down)", True, r"connection refused|timeout"),
    "silent.test": ("silent", True, r"timeout"),
    "servfail.test": ("servfail", True, r"SERVFAIL"),
    "refused.test": ("refused", True, r"REFUSED"),
    "truncated.test": ("truncated", True, None),
    "garbage.test": ("garbage", True, None),
    "garbage-answer.test": ("garbage-answer", True, None),
    "bad-rdlength.test": ("bad-rdlength", True, None),
    "short.test": ("short", True, None),
    "wrong-id.test": ("wrong-id", True, None),
    "slow.test": ("slow:5", True, r"timeout"),
    "nxdomain.test": ("nxdomain", False, None),
    "nodata.test": ("nodata", False, None),
}


def clean_client(screen, source, out, key):
    try:
        c = harness.SmtpClient(screen.port, source=source, timeout=10)
        port = c.local_port
        reply = c.read_greeting(timeout=10)
        t_first = reply.t_first
        t_final = reply.t_final
        result = {"port": port, "reply": reply, "t_first": t_first, "t_final": t_final}
        if reply.code == 220:
            c.send_mail(harness.unique_marker(key.split(".")[0]))
            result["sent"] = True
        c.close()
        out[key] = result
    except Exception as e:  # reported by the main thread
        out[key] = {"error": repr(e)}


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    zones = {z: m for z, (m, _, _) in CASES.items() if m != "(down)"}
    zones["listed.test"] = "listed"
    dns = harness.scripted_dns(env, zones)
    down_port = harness.dead_udp_port()
    screens = {}
    for zone in list(CASES) + ["listed.test"]:
        server = down_port if zone == "down.test" else dns.port
        screens[zone] = env.smtpscreen(name=zone.split(".")[0], settings={
            "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
            "dnsbl.servers": f"127.0.0.1:{server}", "dnsbl.sites": zone, "dnsbl.timeout": "2s",
            "dnsbl.action": "drop", "cache.backend": "memory", "cache.path": None})

    out = {}
    threads = []
    for i, zone in enumerate(screens):
        t = threading.Thread(target=clean_client, args=(screens[zone], f"127.0.11.{i + 1}", out, zone), daemon=True)
        threads.append(t)
        t.start()
    for t in threads:
        t.join(30)

    rows = []
    for i, zone in enumerate(screens):
        screen = screens[zone]
        src = f"127.0.11.{i + 1}"
        r = out.get(zone)
        check(r is not None and "error" not in r, f"{zone}: the client failed: {r}")
        if zone == "listed.test":
            check(r["reply"].code == 521, f"control zone: a listed client must get 521, got {r['reply'].text!r}")
            check(len(dns.queries_for(zone)) >= 1, "the control zone was never queried")
            continue
        mode, expect_line, reason = CASES[zone]
        check(r["reply"].code == 220 and "scripted.test" in r["reply"].final,
              f"{zone} ({mode}): a failed lookup must count as not listed; the client got {r['reply'].text!r}")
        check(r.get("sent"), f"{zone}: the message did not go through")
        check(r["t_final"] <= DNS_TIMEOUT + 0.6,
              f"{zone} ({mode}): the session waited {r['t_final']:.2f}s for its verdict (dnsbl.timeout {DNS_TIMEOUT}s)")
        check(r["t_final"] >= GREET_WAIT - 0.15, f"{zone}: final 220 before the greet wait ended")
        screen.wait_for_log(harness.re_pass_new(src, r["port"]))
        harness.check_one_disconnect(screen, src, r["port"], outcome="handoff", settle=0)
        reversed_name = ".".join(reversed(src.split("."))) + "." + zone
        lines = [ln for ln in screen.log_lines() if "dnsbl query" in ln]
        if expect_line:
            check(len(lines) == 1, f"{zone} ({mode}): expected one 'dnsbl query ... failed' line, got {lines}")
            check(reversed_name in lines[0], f"{zone}: the failure line does not name the query: {lines[0]!r}")
            if reason:
                check(re.search(reason, lines[0]), f"{zone} ({mode}): the failure line should say /{reason}/: {lines[0]!r}")
        else:
            check(not lines, f"{zone} ({mode}) is a valid 'not listed' answer, but smtpscreen logged {lines}")
            check(r["t_final"] <= GREET_WAIT + 0.6, f"{zone}: {r['t_final']:.2f}s for an answer that came at once")
        if mode != "(down)":
            check(len(dns.queries_for(zone)) >= 1, f"{zone}: the scripted server was never asked")
        rows.append((zone, mode, f"{r['t_final']:.2f}s", lines[0].split("failed: ", 1)[1] if lines else "-"))
    for row in rows:
        harness.log("  %-22s %-14s final 220 after %-6s log: %s" % row)
    check(len(backend.messages()) == len(rows), f"the backend got {len(backend.messages())} of {len(rows)} messages")

    # Twenty at once against the silent server, then one more.
    burst = env.smtpscreen(name="burst", settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "dnsbl.servers": f"127.0.0.1:{dns.port}", "dnsbl.sites": "silent.test", "dnsbl.timeout": "2s",
        "cache.backend": "memory", "cache.path": None})
    out = {}
    threads = [threading.Thread(target=clean_client, args=(burst, f"127.0.12.{i + 1}", out, f"c{i}.x"), daemon=True)
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    worst = 0.0
    for i in range(20):
        r = out.get(f"c{i}.x")
        check(r is not None and "error" not in r, f"burst client {i}: {r}")
        check(r["reply"].code == 220, f"burst client {i}: got {r['reply'].text!r}")
        worst = max(worst, r["t_final"])
    check(worst <= DNS_TIMEOUT + 0.8, f"with 20 lookups pending, a session waited {worst:.2f}s (dnsbl.timeout 2s)")
    failed_lines = [ln for ln in burst.log_lines() if "dnsbl query" in ln]
    check(len(failed_lines) == 20, f"20 timed-out lookups, {len(failed_lines)} 'dnsbl query ... failed' lines")
    burst.wait_for_log(r"dnsbl zone silent\.test timed out \d+ times in a row; skipping it")
    c = harness.SmtpClient(burst.port, source="127.0.12.100", timeout=10)
    reply = c.read_greeting()
    t_final = reply.t_final
    check(reply.code == 220 and t_final <= GREET_WAIT + 0.6,
          f"with the zone skipped, a client must wait only the greet wait; it waited {t_final:.2f}s ({reply.text!r})")
    c.close()
    harness.log(f"burst of 20 on the silent server: worst wait {worst:.2f}s; after the skip {t_final:.2f}s")
    for s in list(screens.values()) + [burst]:
        s.stop()


harness.run(main)
