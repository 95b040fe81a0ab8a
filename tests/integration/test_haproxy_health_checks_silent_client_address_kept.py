#!/usr/bin/env python3
"""HAProxy, run from the shipped conf/haproxy.cfg, in front of two smtpscreen instances
(listen.proxy_protocol = v2, listen.proxy_from = HAProxy's address) and one Postfix:

  - the example's health check (check-send-proxy: a PROXY v2 LOCAL header, then the
    tcp-check dialogue that expects smtpscreen's one-line 220 and ends with QUIT)
    passes on both instances all through the test: both stay UP with L7OK and no
    failed check, and each instance took a health check every `inter` (2 s) all along;
  - no health check counts as a client: smtpscreen logs no session line for any of
    them (no CONNECT, no DISCONNECT, nothing naming HAProxy's address), and Postfix
    never sees one (every connection Postfix logs is a real client's);
  - every client goes through the greet wait on the instance HAProxy chose (both are
    used) and its message is delivered; smtpscreen logs the real client address and
    port and HAProxy's frontend as the address it connected to; Postfix logs the real
    client address and port for every message, never HAProxy's or smtpscreen's."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENTS = [f"127.0.0.{n}" for n in range(21, 29)]
CHECK_INTERVAL = 2.0  # `inter 2s` on the example's server lines


def health_checks_taken(screen):
    """Connections accepted that were no client session: the balancer's checks."""
    m = harness.scrape_metrics(screen.stats_port)
    sessions = sum(v for k, v in m.items() if k.startswith("smtpscreen_sessions_total{"))
    in_progress = sum(v for k, v in m.items() if k.startswith("smtpscreen_sessions{")
                      and 'phase="health_check"' not in k)
    return int(m["smtpscreen_connections_total"] - sessions - in_progress)


def main(env):
    postfix = env.postfix()
    screens = []
    for name in ("screen1", "screen2"):
        stats_port = harness.free_port()
        s = env.smtpscreen(name=name, postfix=postfix, settings=dict(
            harness.BEHIND_HAPROXY, **{"stats.listen": f"127.0.0.1:{stats_port}"}))
        s.stats_port = stats_port
        screens.append(s)
    offsets = {s.name: s.log_size() for s in screens}

    hap = env.haproxy([(s.name, s) for s in screens])
    hap.check_config(harness.EXAMPLE_HAPROXY_CFG)  # the file as shipped, unchanged
    started = time.monotonic()
    hap.wait_servers_up()
    harness.log(f"haproxy: {hap.describe_servers()}")

    served = [harness.balanced_session(screens, postfix, src, balancer_port=hap.port).screen for src in CLIENTS]
    by_instance = {s.name: sum(1 for x in served if x is s) for s in screens}
    check(all(by_instance.values()), f"HAProxy sent every client to one instance: {by_instance}")

    # The checks go on while no client is there, too.
    time.sleep(2 * CHECK_INTERVAL + 0.5)
    elapsed = time.monotonic() - started
    stats = hap.server_stats()
    for s in screens:
        row = stats[s.name]
        check(row["status"] == "UP" and row["check_status"] == "L7OK" and row["chkfail"] == "0"
              and row["chkdown"] == "0",
              f"{s.name} in HAProxy: a health check failed during the test: {hap.describe_servers()}\n"
              f"haproxy log:\n{harness.tail(hap.log_text(), 20)}")
        checks = health_checks_taken(s)
        want = int(elapsed / CHECK_INTERVAL) - 2
        harness.log(f"{s.name}: {by_instance[s.name]} client(s), {checks} health checks in {elapsed:.1f}s")
        check(checks >= want, f"{s.name} took {checks} health checks in {elapsed:.1f}s; with inter "
                              f"{CHECK_INTERVAL}s at least {want} were due")

    # Not one log line for a health check: every session line names a real client.
    for s in screens:
        text = s.log_text()[offsets[s.name]:]
        s.check_no_log(r"(?<!to )\[127\.0\.0\.1\]:\d+", since=offsets[s.name])  # "to" names the frontend
        s.check_no_log(r"PROXY header from", since=offsets[s.name])
        connects = re.findall(r"CONNECT from \[([0-9.]+)\]:\d+", text)
        check(len(connects) == by_instance[s.name] and set(connects) <= set(CLIENTS),
              f"{s.name}: CONNECT lines {connects}, expected its {by_instance[s.name]} client(s) alone")
        check(len(re.findall(r"DISCONNECT ", text)) == by_instance[s.name],
              f"{s.name}: DISCONNECT lines beyond its clients':\n{harness.tail(text, 30)}")

    # Postfix saw the clients and nothing else, each under its own address.
    plog = postfix.log()
    seen = re.findall(r"smtpd\[\d+\]: connect from [^\[]*\[([0-9.]+)\]", plog)
    check(sorted(seen) == sorted(CLIENTS),
          f"Postfix's connections: {sorted(seen)}; expected the {len(CLIENTS)} clients only (a health check "
          f"or a client under HAProxy's address would show as 127.0.0.1)")
    queued = re.findall(r"client=[^\[]*\[([0-9.]+)\]", plog)
    check(sorted(queued) == sorted(CLIENTS), f"Postfix's client= lines name {sorted(queued)}, expected {CLIENTS}")


harness.run(main, timeout=150)
