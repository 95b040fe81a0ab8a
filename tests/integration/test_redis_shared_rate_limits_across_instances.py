#!/usr/bin/env python3
"""limits.per_client_rate with cache.backend = redis (issue 18): two smtpscreen instances
(two event loops each, so four Redis connections) share one real redis-server in front
of one Postfix (one names it `localhost:PORT`, a host name resolved at start), limit 4/1m per client. A client that makes 6 connections, A and B in
turn, gets 4 sessions and 2 immediate '421 4.7.0 ... too many connections from IP'
replies: the instances count it together, not 3 each. Exactly one 'RATE LIMIT' line for
the period, on whichever instance saw the 5th connection. The count is the documented
key, `smtpscreen:rate:<client address>` (and `smtpscreen:rate:<network>/24` for
limits.per_network_rate), a number that Redis expires at the end of the period."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.52.1"
LIMIT = 4
PERIOD_S = 60


def admitted(screen):
    c = harness.SmtpClient(screen.port, source=CLIENT, timeout=15)
    first = c.read_line(timeout=5)
    check(first.startswith("220"), f"{screen.name} [{CLIENT}]:{c.local_port} must be admitted (220), got {first!r}")
    return c


def refused(screen):
    return harness.refused_too_many_from(screen, CLIENT, "the shared count")


def main(env):
    redis = env.redis(unix=True, also_v6=True)
    postfix = env.postfix()
    # screen1 names the server by host name (cache.redis = localhost:PORT, resolved when
    # the configuration is loaded), screen2 by its unix socket.
    via_name = dict(redis.cache_settings(), **{"cache.redis": f"localhost:{redis.port}"})
    screens = [env.smtpscreen(name=name, postfix=postfix, settings=dict(
        {"limits.per_client_rate": f"{LIMIT}/{PERIOD_S}s", "limits.per_network_rate": "50/1m",
         "process.threads": "2", "greet.wait": "1s"}, **cache))
        for name, cache in (("screen1", via_name), ("screen2", redis.cache_settings(use_unix=True)))]

    # A, B, A, B: the shared count lets 4 in; the 5th and the 6th (A, B) are over it.
    sessions = [admitted(screens[i % 2]) for i in range(LIMIT)]
    cut = [(screens[i % 2], refused(screens[i % 2])) for i in range(LIMIT, LIMIT + 2)]
    for c in sessions:
        c.close()
    for screen, port in cut:
        harness.check_one_disconnect(screen, CLIENT, port, outcome="rate-limit", settle=0)

    lines = [ln for s in screens for ln in s.log_lines() if re.search(rf"RATE LIMIT {LIMIT}/\S+ from ", ln)]
    check(len(lines) == 1, f"expected one RATE LIMIT line for {CLIENT} in its period, across both, got {lines}")
    check(f"[{CLIENT}]:{cut[0][1]} (limits.per_client_rate)" in lines[0],
          f"the line must name the 5th connection: {lines[0]!r}")
    outages = [ln for s in screens for ln in s.log_lines() if "Redis at" in ln]
    check(not outages, f"no Redis outage was expected: {outages}")

    key = f"smtpscreen:rate:{CLIENT}"
    check(redis.command("GET", key) == str(LIMIT + 2).encode(),
          f"{key} holds {redis.command('GET', key)!r}, expected {LIMIT + 2} (every connection is counted)")
    pttl = redis.command("PTTL", key)
    check(0 < pttl <= PERIOD_S * 1000, f"{key} expires in {pttl} ms; the period is {PERIOD_S}s")
    net = "smtpscreen:rate:127.0.52.0/24"
    check(redis.command("GET", net) == str(LIMIT + 2).encode(), f"{net} holds {redis.command('GET', net)!r}")
    harness.log(f"{CLIENT}: 4 sessions on {', '.join(s.name for s in screens)} in turn, "
                f"refused {[(s.name, p) for s, p in cut]}; {key} = {LIMIT + 2}, expiring in {pttl} ms")


harness.run(main, timeout=120)
