#!/usr/bin/env python3
"""limits.per_client_rate and limits.per_network_rate (docs/design.md, "Edge defences";
issue 19): smtpscreen with two event loops (process.threads = 2, so the count is shared
between them) in front of the private Postfix, limits 3/3s per client and 5/3s per /24.
  - a client that makes 6 connections within its period gets 3 sessions (each one
    delivers a message to Postfix) and 3 immediate '421 4.7.0 ... too many connections
    from IP' replies, with no '220-' line before them, each closed at once, each ended
    'DISCONNECT ... rate-limit', and exactly one 'RATE LIMIT 3/3s from [ip]:port
    (limits.per_client_rate)' line for the period; none of the 3 reaches Postfix;
  - 7 addresses of one /24, once each: 5 get sessions, 2 get the 421, one 'RATE LIMIT
    5/3s ... (limits.per_network_rate, 127.0.20.0/24)' line;
  - meanwhile a client of another network delivers as usual, and a client that
    access.file permits is never counted (6 connections, 6 handoffs);
  - the metrics count the refusals by scope and the 'rate-limit' outcome, exactly;
  - after the period the first client is admitted again, and its next burst is cut at
    3 once more, with one more RATE LIMIT line for the new period."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

PERIOD = 3.0
BURSTER = "127.0.10.1"
NETWORK = [f"127.0.20.{i}" for i in range(1, 8)]
BYSTANDER = "127.0.30.7"
ALLOWED = "127.0.40.1"


def admitted(screen, source):
    """A connection the limits let in: the '220-' of the greet wait, or the backend's
    220 for a client that passed before (PASS OLD)."""
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    first = c.read_line(timeout=5)
    check(first.startswith("220"), f"[{source}]:{c.local_port} must be admitted (220), got {first!r}")
    return c


def refused(screen, source):
    return harness.refused_too_many_from(screen, source, "anvil's rate limit")


def rate_lines(screen, source):
    return [ln for ln in screen.log_lines() if re.search(rf"RATE LIMIT \S+ from {harness.ip_port(source)} ", ln)]


def deliver(client, source):
    """The rest of an admitted session: the backend's greeting, a message, QUIT."""
    greeting = client.read_reply(timeout=10)
    check(greeting.final.startswith("220 backend.test"), f"[{source}]: expected the backend's 220, got {greeting.text!r}")
    marker = harness.unique_marker("rate")
    client.ehlo()
    client.send_mail(marker, ehlo=False)
    client.close()
    return marker


def main(env):
    pf = env.postfix()
    stats_port = harness.free_port()
    access = os.path.join(env.dir, "access.cidr")
    with open(access, "w") as f:
        f.write(f"{ALLOWED} permit\n")
    screen = env.smtpscreen(postfix=pf, settings={
        "limits.per_client_rate": "3/3s", "limits.per_network_rate": "5/3s",
        "access.file": access, "process.threads": "2", "greet.wait": "1s",
        "stats.listen": f"127.0.0.1:{stats_port}"})
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics")
    before = harness.scrape_metrics(stats_port)

    # The burst: 3 sessions, then 3 refusals, all within the period.
    t0 = time.monotonic()
    sessions = [admitted(screen, BURSTER) for _ in range(3)]
    cut = [refused(screen, BURSTER) for _ in range(3)]
    check(time.monotonic() - t0 < PERIOD - 0.5, "the burst took longer than the period; the test proves nothing")
    kept = [c.local_port for c in sessions]
    markers = [deliver(c, BURSTER) for c in sessions]

    # The network: 7 addresses of 127.0.20.0/24, each once.
    t_net = time.monotonic()
    net_sessions = [admitted(screen, ip) for ip in NETWORK[:5]]
    net_cut = [(ip, refused(screen, ip)) for ip in NETWORK[5:]]
    check(time.monotonic() - t_net < PERIOD - 0.5, "the network's burst took longer than the period")
    for c in net_sessions:
        c.close()

    # Others are not touched: a client of another network delivers as usual, and an
    # allowlisted client is never counted.
    harness.clean_session(screen, pf, source=BYSTANDER)
    for i in range(6):
        c = harness.SmtpClient(screen.port, source=ALLOWED, timeout=10)
        reply = c.read_greeting(timeout=5)
        check(reply.final.startswith("220 backend.test"),
              f"allowlisted connection {i + 1}: expected the backend's 220 at once, got {reply.text!r}")
        c.expect("QUIT", 221)
        c.close()

    for marker in markers:
        pf.wait_for_delivery(marker)
    for port in cut:
        harness.check_one_disconnect(screen, BURSTER, port, outcome="rate-limit", settle=0)
    for ip, port in net_cut:
        harness.check_one_disconnect(screen, ip, port, outcome="rate-limit", settle=0)

    lines = rate_lines(screen, BURSTER)
    check(len(lines) == 1, f"expected one RATE LIMIT line for {BURSTER} in its period, got {lines}")
    check(re.search(rf"RATE LIMIT 3/3s from {harness.ip_port(BURSTER, cut[0])} \(limits\.per_client_rate\)$",
                    lines[0]), f"the line must name the first refused connection and the key: {lines[0]!r}")
    net_lines = [ln for ln in screen.log_lines() if "limits.per_network_rate" in ln]
    check(len(net_lines) == 1, f"expected one RATE LIMIT line for 127.0.20.0/24, got {net_lines}")
    check(re.search(rf"RATE LIMIT 5/3s from {harness.ip_port(NETWORK[5], net_cut[0][1])} "
                    rf"\(limits\.per_network_rate, 127\.0\.20\.0/24\)$", net_lines[0]),
          f"the network's line: {net_lines[0]!r}")
    check(not rate_lines(screen, ALLOWED) and not rate_lines(screen, BYSTANDER), "a client outside the limits was named")

    # Nothing refused reached Postfix; the sessions did.
    time.sleep(1.0)
    plog = pf.log()
    for port in kept:
        check(re.search(rf"\[{re.escape(BURSTER)}\]:{port}\b", plog), f"Postfix never saw session [{BURSTER}]:{port}")
    for ip, port in [(BURSTER, p) for p in cut] + net_cut:
        check(not re.search(rf"\[{re.escape(ip)}\]:{port}\b", plog), f"refused [{ip}]:{port} reached Postfix")
    for ip in NETWORK:
        check(f"[{ip}]" not in plog, f"{ip} reached Postfix (it was held in the greet wait or refused)")

    after = harness.scrape_metrics(stats_port)

    def moved(name):
        return after.get(name, 0.0) - before.get(name, 0.0)

    for name, want in (('smtpscreen_rate_limited_total{scope="client"}', 3),
                       ('smtpscreen_rate_limited_total{scope="network"}', 2),
                       ('smtpscreen_sessions_total{outcome="rate-limit"}', 5),
                       ('smtpscreen_passes_total{kind="allowlisted"}', 6)):
        check(moved(name) == want, f"{name} moved by {moved(name)}, expected {want}")

    # After the period: admitted again, and the next burst is cut at 3 again.
    time.sleep(max(0.0, t0 + PERIOD + 0.3 - time.monotonic()))
    again = [admitted(screen, BURSTER) for _ in range(3)]
    cut_again = refused(screen, BURSTER)
    for c in again:
        c.close()
    harness.check_one_disconnect(screen, BURSTER, cut_again, outcome="rate-limit", settle=0)
    lines = rate_lines(screen, BURSTER)
    check(len(lines) == 2 and f"[{BURSTER}]:{cut_again} " in lines[1],
          f"the new period's refusal must log once more: {lines}")
    harness.log(f"burst of 6 from {BURSTER}: sessions on ports {kept}, refused {cut}; "
                f"network 127.0.20.0/24: refused {net_cut}; after {PERIOD}s admitted again")
    screen.stop()


harness.run(main)
