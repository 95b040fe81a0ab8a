#!/usr/bin/env python3
"""A tarpitted connection costs no more memory than an idle one (issue 19;
docs/design.md, "Memory per connection"). Two smtpscreen instances, one after the
other, each holding HELD clients (default 4,000; TARPIT_MEMORY_HELD changes it) from
80 source addresses:
  - idle: greet.wait 120s, the clients silent in the greet wait after its '220-' line;
  - tarpit: greet.action = tarpit, greet.wait 300ms, tarpit.delay 1s and a greeting of
    100 octets, the clients talking before it (pregreet bots), so that every one is
    being given its greeting one octet a second while it is measured.
smtpscreen's resident memory per held connection is compared: what the second half of
the clients added to RSS, over their number, so that what the first ones touched once
(the code of their path, the first growth of the loop's tables) is not counted. The
tarpitted one may cost at most MARGIN bytes more than the idle one. The tarpit once kept
a copy of the greeting, a Stutter and a clock entry per client, 276 bytes more than an
idle client (bench/results/tarpit-cost.txt)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

MARGIN = 64  # bytes a connection: the measure repeats within a few
BANNER = "mx.tarpit.example ESMTP a greeting long enough that each tarpitted bot is still being given it"


def hold(screen, count, net, pregreet):
    """count clients from 127.<net>.0.1-80, each kept once its '220-' line came (and,
    with pregreet, once it has talked before the rest of the greeting)."""
    return harness.hold_clients(screen.port, count, lambda i: f"127.{net}.0.{i % 80 + 1}",
                                on_held=(lambda s: s.send(b"EHLO bot.example\r\n")) if pregreet else None)


def per_connection(env, name, settings, net, pregreet, held, backend):
    """RSS bytes per held connection of a fresh instance, from its second half."""
    screen = env.smtpscreen(name=name, settings={
        "backend.address": f"127.0.0.1:{backend.port}", "limits.max_connections": "20000",
        "limits.per_client_connections": "100", "cache.backend": "memory", "cache.path": None,
        "greet.banner": BANNER, "limits.shutdown_grace": "1s", **settings})
    pid = screen.pid
    socks, rss = [], []
    t0 = time.monotonic()
    for half in (held // 2, held - held // 2):
        socks += hold(screen, half, net + len(rss), pregreet)
        if pregreet:
            harness.wait_until(lambda: screen.log_text().count(" TARPIT [") >= len(socks), 60,
                               what=f"{len(socks)} TARPIT lines", interval=0.5)
        time.sleep(1.0)
        rss.append(harness.proc_status_kib(pid, "VmRSS"))
    if pregreet:
        check(screen.log_text().count(" DISCONNECT ") == 0, "a tarpitted client left while it was measured")
    per = (rss[1] - rss[0]) * 1024 / (held - held // 2)
    harness.log(f"{name}: {held} held in {time.monotonic() - t0:.1f} s, RSS {rss[0]} KiB with the first half, "
                f"{rss[1]} KiB with all: {per:.0f} bytes each")
    for s in socks:
        s.close()
    screen.stop()
    return per


def main(env):
    # Under AddressSanitizer freed blocks wait in a quarantine before reuse: with it off,
    # what is held is what is measured.
    harness.bound_asan_quarantine(mb=0)
    soft = harness.raise_own_open_files(20000)
    held = min(int(os.environ.get("TARPIT_MEMORY_HELD", "4000")), soft - 300)
    backend = harness.scripted_backend(env, "smtp")
    idle = per_connection(env, "idle", {"greet.wait": "120s"}, 40, False, held, backend)
    tarpit = per_connection(env, "tarpit", {
        "greet.wait": "300ms", "greet.action": "tarpit", "tarpit.delay": "1s",
        "tarpit.max_connections": str(held + 100)}, 42, True, held, backend)
    harness.log(f"TARPIT MEMORY tarpitted={tarpit:.0f} idle={idle:.0f} bytes a connection ({held} held)")
    check(tarpit <= idle + MARGIN,
          f"a tarpitted connection costs {tarpit:.0f} bytes, an idle one {idle:.0f}: more than {MARGIN} bytes "
          f"beyond it")


if __name__ == "__main__":
    harness.run(main)
