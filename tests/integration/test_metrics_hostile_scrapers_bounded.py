#!/usr/bin/env python3
"""Hostile scrapers on the metrics endpoint (stats.listen; smtpscreen(8), METRICS) cost
bounded memory and never delay an SMTP client's banner. While regular SMTP clients keep
connecting and timing their first banner line, the endpoint gets:
  - a 1 MB request target                      -> 414 (or the close right after it)
  - 20,000 header fields                        -> 431
  - a bogus Content-Length ("12abc")            -> 400
  - a request with a body (Content-Length: 5)   -> 413
  - an unknown method (BREW) and DELETE         -> 405
  - another path                                -> 404
  - 20 slowloris scrapers dripping a header a byte every 0.3 s, and 50 idle
    connections that send nothing: at most 16 are kept (the rest closed at once), each
    answered 408 and closed 5 s after its accept, however it drips;
then a normal scrape is answered 200 and counts each answer above. Throughout, every
banner comes within a generous bound of the baseline measured before the abuse in the
same test, smtpscreen's RSS grows by less than 20 MiB and its descriptors by at most
the endpoint's cap."""
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CAP = 16


def banner_latency(port, source):
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        check(got.startswith(b"220"), f"banner from [{source}]: {got!r}")
        return time.monotonic() - t0
    finally:
        s.close()


class Banners(threading.Thread):
    """Times the first banner line of a new client every 0.1 s until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.times, self.errors = port, [], []
        self.stopping = threading.Event()

    def run(self):
        i = 0
        while not self.stopping.is_set():
            i += 1
            try:
                self.times.append(banner_latency(self.port, f"127.0.31.{i % 250 + 1}"))
            except Exception as e:  # reported by the main thread
                self.errors.append(repr(e))
            self.stopping.wait(0.1)


def main(env):
    harness.bound_asan_quarantine()
    stats = harness.free_port()
    backend = harness.scripted_backend(env, "smtp")
    screen = env.smtpscreen(settings={
        "stats.listen": f"127.0.0.1:{stats}", "backend.address": f"127.0.0.1:{backend.port}",
        "greet.wait": "1s", "cache.backend": "memory", "cache.path": None,
        "limits.per_client_connections": "1000"})
    pid = screen.pid
    harness.scrape_metrics(stats)  # warm: the first scrape's allocations are not growth

    baseline = [banner_latency(screen.port, f"127.0.30.{i + 1}") for i in range(15)]
    base = statistics.median(baseline)
    bound = max(1.0, 20 * max(baseline))
    harness.log(f"baseline banner: median {base * 1000:.1f} ms, max {max(baseline) * 1000:.1f} ms; "
                f"bound during the abuse {bound:.2f} s")
    rss0 = harness.rss_mib(pid)
    fds0 = harness.open_fd_count(pid)
    sampler = harness.RssSampler(pid, 0.1)
    banners = Banners(screen.port)
    banners.start()

    answers = {}

    def ask(name, data, expect):
        status, _, body = harness.http_request(stats, data, timeout=15)
        answers[name] = status
        check(status in expect, f"{name}: expected {expect}, got {status} {body[:120]!r}")

    # 1 MB URL: answered once 1024 octets are in; the close may reach the scraper
    # before it has sent the rest, as a reset (no answer read).
    ask("1 MB URL", b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n", (414, None))
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(20000))
    ask("20,000 headers", b"GET /metrics HTTP/1.1\r\n" + headers + b"\r\n", (431, None))
    ask("bogus Content-Length", b"GET /metrics HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", (400,))
    ask("a body", b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", (405,))
    ask("GET with a body", b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", (413,))
    ask("unknown method", b"BREW /metrics HTTP/1.1\r\n\r\n", (405,))
    ask("DELETE", b"DELETE /metrics HTTP/1.1\r\n\r\n", (405,))
    ask("another path", b"GET /admin HTTP/1.1\r\n\r\n", (404,))
    ask("TLS on the HTTP port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64), (400,))

    # Slowloris and idle scrapers: more than the cap at once.
    slow = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", stats), timeout=5)
        s.setblocking(False)
        slow.append(s)
    idle = [socket.create_connection(("127.0.0.1", stats), timeout=5) for _ in range(50)]
    opened = time.monotonic()
    drip = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"z" * 100
    peak_fds = 0
    sent = 0
    while time.monotonic() - opened < 7.0:
        for s in slow:
            try:
                s.send(drip[sent % len(drip):sent % len(drip) + 1])
            except OSError:
                pass
        sent += 1
        peak_fds = max(peak_fds, harness.open_fd_count(pid))
        time.sleep(0.3)
    got = {}
    for s in slow + idle:
        s.setblocking(True)
        s.settimeout(2)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        key = data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed without an answer"
        got[key] = got.get(key, 0) + 1
        s.close()
    answers["slow and idle scrapers"] = got
    kept = got.get("HTTP/1.1 408 Request Timeout", 0)
    check(0 < kept <= CAP, f"{kept} slow or idle scrapers answered 408 (at most {CAP} may be kept): {got}")
    check(set(got) <= {"HTTP/1.1 408 Request Timeout", "closed without an answer"},
          f"slow and idle scrapers got: {got}")

    banners.stopping.set()
    banners.join(15)
    peak = sampler.stop()
    check(not banners.errors, f"SMTP clients failed during the abuse: {banners.errors[:3]}")
    check(len(banners.times) >= 20, f"only {len(banners.times)} SMTP clients ran during the abuse")
    worst = max(banners.times)
    harness.log(f"during the abuse: {len(banners.times)} banners, median "
                f"{statistics.median(banners.times) * 1000:.1f} ms, max {worst * 1000:.1f} ms")
    check(worst <= bound, f"a banner took {worst:.2f}s during the abuse (baseline median {base * 1000:.1f} ms, "
                          f"bound {bound:.2f}s)")
    growth = peak - rss0
    harness.log(f"RSS {rss0:.1f} -> peak {peak:.1f} MiB; descriptors {fds0} -> peak {peak_fds}")
    check(growth < 20, f"RSS grew by {growth:.1f} MiB under hostile scrapers")
    # The SMTP clients of the banner thread hold a few descriptors too.
    check(peak_fds <= fds0 + CAP + 10, f"descriptors {fds0} -> {peak_fds}: more than {CAP} scrapers were kept")

    # Back to normal: a scrape works and counts what the endpoint answered.
    m = harness.scrape_metrics(stats)
    for code in (400, 404, 405, 408, 413, 431):
        check(m[f'smtpscreen_stats_requests_total{{code="{code}"}}'] >= 1, f"no {code} counted: {m}")
    check(m["smtpscreen_stats_requests_total{code=\"405\"}"] >= 3, "the three 405s were not all counted")
    check(m["smtpscreen_stats_connections_refused_total"] >= len(slow) + len(idle) - CAP,
          f"connections over the cap: {m['smtpscreen_stats_connections_refused_total']} counted")
    check(m["smtpscreen_connections_total"] == len(baseline) + len(banners.times),
          f"SMTP connections counted {m['smtpscreen_connections_total']}, made "
          f"{len(baseline) + len(banners.times)}")
    for k, v in answers.items():
        harness.log(f"{k}: {v}")
    screen.stop()


harness.run(main, timeout=150)
