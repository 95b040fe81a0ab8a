#!/usr/bin/env python3
"""The Prometheus endpoint (stats.listen; smtpscreen(8), METRICS) counts exactly what
happened. smtpscreen runs with two event loops (process.threads = 2, so the counters of
both are added up at the scrape) in front of the private Postfix, with rbldnsd's bl.test
as its DNSBL. Between a scrape before and a scrape after, a scripted run:
  - a pregreet bot (127.0.0.9, not listed) talks first, is rejected in the enforce
    dialog and quits;
  - a DNSBL-listed client (127.0.0.2) is rejected in the enforce dialog and quits;
  - a clean client (127.0.0.7) passes (PASS NEW) and delivers to Postfix, then comes
    back and is handed off at once (PASS OLD);
and, on a second smtpscreen whose backend refuses every client (a 421 greeting) and then
is stopped, one client relayed the refusal (backend-refused) and one that finds no
backend (backend-unavailable); on a third, with the deep tests and STARTTLS, a
pipelining bot (rejected) and a client that does STARTTLS in smtpscreen's own dialog
and quits there (one full handshake). Every counter of the scrape after differs from the one
before by exactly what the run did, and by nothing else; the sessions gauge is back
to 0; GET /metrics is served on its own port, never on the SMTP one."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

# Figures that move on their own (time, memory) or by the scrape itself.
VOLATILE = ("process_", "smtpscreen_build_info", "smtpscreen_dnsbl_query_duration_seconds_sum",
            "smtpscreen_stats_")


def deltas(before, after):
    keys = set(before) | set(after)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys
            if not k.startswith(VOLATILE) and "_bucket{" not in k}


def check_exact(before, after, expected, who):
    got = deltas(before, after)
    wrong = {k: (v, expected.get(k, 0)) for k, v in got.items() if v != expected.get(k, 0)}
    missing = [k for k in expected if k not in after]
    check(not missing, f"{who}: no sample {missing} in the scrape after the run")
    check(not wrong, f"{who}: counters that moved by other than the run did (got, expected): {wrong}")
    harness.log(f"{who}: every counter moved by exactly what the run did: "
                f"{ {k: v for k, v in sorted(got.items()) if v} }")


def quit_enforced(screen, ip, pregreet):
    c = harness.SmtpClient(screen.port, source=ip, timeout=15)
    port = c.local_port
    first = c.read_line(timeout=5)
    check(first.startswith("220"), f"{ip}: banner {first!r}")
    if pregreet:
        c.send("EHLO bot.example\r\n")
    greeting = first if first.startswith("220 ") else c.read_reply(timeout=10).final
    check("backend.test" not in greeting, f"{ip}: handed off, but it must be rejected: {greeting!r}")
    c.drain(0.5)
    c.expect("QUIT", 221)
    c.check_closed(5, "after QUIT")
    screen.wait_for_log(harness.re_disconnect(ip, port) + r" rejected")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    stats_port = harness.free_port()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={
        "stats.listen": f"127.0.0.1:{stats_port}", "process.threads": "2", "greet.wait": "1s"})
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics")

    before = harness.scrape_metrics(stats_port)
    check(before["smtpscreen_sessions{phase=\"greet_wait\"}"] == 0, "a session in progress before the run")

    quit_enforced(screen, "127.0.0.9", pregreet=True)
    screen.wait_for_log(harness.re_pregreet("127.0.0.9"))
    quit_enforced(screen, harness.LISTED_CLIENT, pregreet=False)
    screen.wait_for_log(harness.re_dnsbl_rank(harness.LISTED_CLIENT, 1))
    harness.clean_session(screen, pf, expect="new")
    harness.clean_session(screen, pf, expect="old")

    after = harness.scrape_metrics(stats_port)
    check_exact(before, after, {
        "smtpscreen_connections_total": 4,
        "smtpscreen_sessions_total{outcome=\"rejected\"}": 2,
        "smtpscreen_sessions_total{outcome=\"handoff\"}": 2,
        "smtpscreen_test_failures_total{test=\"pregreet\"}": 1,
        "smtpscreen_test_failures_total{test=\"dnsbl\"}": 1,
        "smtpscreen_passes_total{kind=\"new\"}": 1,
        "smtpscreen_passes_total{kind=\"old\"}": 1,
        "smtpscreen_cache_lookups_total{result=\"miss\"}": 3,
        "smtpscreen_cache_lookups_total{result=\"hit\"}": 1,
        "smtpscreen_dnsbl_queries_total{zone=\"bl.test\",result=\"listed\"}": 1,
        "smtpscreen_dnsbl_queries_total{zone=\"bl.test\",result=\"not_listed\"}": 2,
        "smtpscreen_dnsbl_query_duration_seconds_count{zone=\"bl.test\"}": 3,
    }, "screen")
    check(after["smtpscreen_stats_requests_total{code=\"200\"}"] - before["smtpscreen_stats_requests_total{code=\"200\"}"] == 1,
          "the endpoint did not count its own scrape")
    for k, v in after.items():
        if k.startswith("smtpscreen_sessions{"):
            check(v == 0, f"{k} = {v} after every session ended")
    # The SMTP port speaks SMTP to a scraper too (a pregreet, as it happens).
    c = harness.SmtpClient(screen.port, timeout=5)
    c.send("GET /metrics HTTP/1.1\r\n\r\n")
    first = c.read_line(timeout=5)
    check(first.startswith("220"), f"the SMTP port answered a scrape with {first!r}")
    c.close()
    check(after["process_resident_memory_bytes"] > 1e6 and after["process_open_fds"] > 3,
          f"process figures: {after['process_resident_memory_bytes']}, {after['process_open_fds']}")

    # The backend's side: a refusal relayed, then no backend at all.
    backend = harness.scripted_backend(env, "greet-then-close",
                                       greeting="421 4.7.0 backend.test Error: too many connections")
    refusing_stats = harness.free_port()
    refusing = env.smtpscreen(name="refusing", settings={
        "stats.listen": f"127.0.0.1:{refusing_stats}", "backend.address": f"127.0.0.1:{backend.port}",
        "cache.backend": "memory", "cache.path": None})
    before = harness.scrape_metrics(refusing_stats)
    c = harness.SmtpClient(refusing.port, source="127.0.0.8", timeout=15)
    port = c.local_port
    text = " ".join(r.text for r in c.replies_until_eof(timeout=10))
    check("421 4.7.0" in text, f"the backend's refusal was not relayed: {text!r}")
    refusing.wait_for_log(harness.re_disconnect("127.0.0.8", port) + r" backend-refused")
    backend.stop()
    c = harness.SmtpClient(refusing.port, source="127.0.0.8", timeout=15)
    port = c.local_port
    text = " ".join(r.text for r in c.replies_until_eof(timeout=10))
    check("421 4.3.2" in text, f"no backend: expected 421 4.3.2, got {text!r}")
    refusing.wait_for_log(harness.re_disconnect("127.0.0.8", port) + r" backend-unavailable")
    after = harness.scrape_metrics(refusing_stats)
    check_exact(before, after, {
        "smtpscreen_connections_total": 2,
        "smtpscreen_sessions_total{outcome=\"backend-refused\"}": 1,
        "smtpscreen_sessions_total{outcome=\"backend-unavailable\"}": 1,
        "smtpscreen_backend_errors_total{kind=\"refused\"}": 1,
        "smtpscreen_backend_errors_total{kind=\"unavailable\"}": 1,
        # The first client's pass is remembered, so the second is handed off at once.
        "smtpscreen_passes_total{kind=\"new\"}": 1,
        "smtpscreen_passes_total{kind=\"old\"}": 1,
        "smtpscreen_cache_lookups_total{result=\"miss\"}": 1,
        "smtpscreen_cache_lookups_total{result=\"hit\"}": 1,
    }, "refusing")
    screen.stop()
    refusing.stop()

    # Deep tests and STARTTLS: a pipelining bot, and a client that starts TLS in
    # smtpscreen's own dialog and quits there.
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    deep_stats = harness.free_port()
    deep = env.smtpscreen(name="deep", postfix=pf, settings=harness.tls_settings(cert, **harness.deep_settings({
        "stats.listen": f"127.0.0.1:{deep_stats}", "deep.action": "enforce", "greet.wait": "1s"})))
    before = harness.scrape_metrics(deep_stats)
    c = harness.deep_client(deep, "127.0.0.44")
    port = c.local_port
    c.send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@example.test>\r\n")
    for _ in range(3):
        c.read_reply()
    c.expect("QUIT", 221)
    c.check_closed(5, "the pipelining bot, after QUIT")
    deep.wait_for_log(harness.re_disconnect("127.0.0.44", port) + r" rejected")
    c, _ = harness.starttls_client(deep.port, source="127.0.0.45", ca_file=ca.ca_file)
    port = c.local_port
    c.expect("QUIT", 221)
    c.close()
    deep.wait_for_log(harness.re_disconnect("127.0.0.45", port))
    after = harness.scrape_metrics(deep_stats)
    check_exact(before, after, {
        "smtpscreen_connections_total": 2,
        "smtpscreen_sessions_total{outcome=\"rejected\"}": 1,
        "smtpscreen_sessions_total{outcome=\"quit\"}": 1,
        "smtpscreen_test_failures_total{test=\"pipelining\"}": 1,
        "smtpscreen_tls_handshakes_total{result=\"full\"}": 1,
        "smtpscreen_cache_lookups_total{result=\"miss\"}": 2,
    }, "deep")
    deep.stop()


harness.run(main, timeout=150)
