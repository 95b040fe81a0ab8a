#!/usr/bin/env python3
"""A DNSBL server that drops some queries of a burst but answers the others is busy, not
down: the zone must not be skipped (docs/design.md, step 5: a zone that keeps timing out is
logged and skipped; bench/README.md, findings under load, item 1).

A burst of new clients overflows rbldnsd's receive buffer, so some queries are lost while
the rest are answered. Their timeouts come in a row, one dnsbl.timeout later; counted as
"times in a row" they used to switch the zone off for 60s, and every listed client in
that time got in. Here a scripted DNS server lists every client and drops the queries
of one client in three (retries too). 30 listed clients connect at once (the 10 whose
queries are lost a moment before the others): 20 get 521 at once, the 10 time out and
count as not listed (one 'failed: timeout' line each). Then 10 more listed clients, one
after the other: each is still asked about and rejected, and no 'skipping it' line
appears."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ZONE = "lossy.test"
DROP_EVERY = 3
BURST = 30
AFTER = 10


class LossyDns(harness.ScriptedDns):
    """'listed' for every name, except that a name whose first label (the client
    address's last octet) is a multiple of DROP_EVERY is never answered."""

    def _reply(self, packet, qid, name, qtype, qend):
        first = name.split(".", 1)[0]
        if self.mode_for(name) == "lossy":
            if first.isdigit() and int(first) % DROP_EVERY == 0:
                return None
            return 0, self._answer(qid, packet[12:qend], answers=["127.0.0.2"] if qtype == 1 else [])
        return super()._reply(packet, qid, name, qtype, qend)


def asked(dns, ip):
    prefix = ".".join(reversed(ip.split("."))) + "."
    return [q for q in dns.queries_for(ZONE) if q[1].startswith(prefix)]


def connect(screen, source, out):
    try:
        c = harness.SmtpClient(screen.port, source=source, timeout=10)
        reply = c.read_greeting(timeout=10)
        t_final = reply.t_final
        out[source] = (reply, t_final)
        c.close()
    except Exception as e:  # reported by the main thread
        out[source] = (None, repr(e))


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    dns = LossyDns({ZONE: "lossy"})
    env.add_cleanup(dns.stop)
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "dnsbl.servers": f"127.0.0.1:{dns.port}", "dnsbl.sites": ZONE, "dnsbl.timeout": "1s",
        "dnsbl.action": "drop", "cache.backend": "memory", "cache.path": None})

    burst = [f"127.0.18.{i}" for i in range(1, BURST + 1)]
    dropped = [ip for ip in burst if int(ip.rsplit(".", 1)[1]) % DROP_EVERY == 0]
    out = {}
    threads = {ip: threading.Thread(target=connect, args=(screen, ip, out), daemon=True) for ip in burst}
    # The lost queries go out first, so that every answer comes after them whatever the
    # scheduling (in a real burst they are interleaved; what matters is the same).
    for ip in dropped:
        threads[ip].start()
    harness.wait_until(lambda: all(asked(dns, ip) for ip in dropped), 5, what="the queries that will be lost")
    for ip in burst:
        if ip not in dropped:
            threads[ip].start()
    for t in threads.values():
        t.join(20)
    for ip in burst:
        reply, t_final = out.get(ip, (None, "no result"))
        check(reply is not None, f"burst client {ip}: {t_final}")
        want = 220 if ip in dropped else 521
        check(reply.code == want, f"burst client {ip}: expected {want}, got {reply.text!r}")
    # Every lost query has timed out and been logged by now (the sessions waited for it).
    def timeouts():
        return [ln for ln in screen.log_lines() if "failed: timeout" in ln]
    harness.wait_until(lambda: len(timeouts()) >= len(dropped), 5, what="a timeout line per lost query")
    check(len(timeouts()) == len(dropped), f"{len(dropped)} lost queries, timeout lines: {timeouts()}")

    # Listed clients after the burst: the zone is still asked, and still lists them.
    for i in range(1, AFTER + 1):
        ip = f"127.0.19.{i * DROP_EVERY + 1}"
        c = harness.SmtpClient(screen.port, source=ip, timeout=10)
        reply = c.read_greeting(timeout=10)
        t_final = reply.t_final
        c.close()
        check(reply.code == 521,
              f"listed client {ip} after a burst with {len(dropped)} lost queries got {reply.text!r} after "
              f"{t_final:.2f}s: the zone was switched off although it answered every other query")
        check(asked(dns, ip), f"{ip}: the DNS server was never asked")
    screen.check_no_log(r"skipping it")
    harness.log(f"burst of {BURST}: {len(dropped)} lost queries, {BURST - len(dropped)} rejected at once; "
                f"then {AFTER} of {AFTER} listed clients rejected, no skip")


harness.run(main)
