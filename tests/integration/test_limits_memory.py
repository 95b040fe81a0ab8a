#!/usr/bin/env python3
"""Memory under ~20,000 connections (issue 6: "the total memory under 20,000 connections
is reported"). smtpscreen holds HOLDERS clients (default 19,500: the hard RLIMIT_NOFILE
of this machine is 20,000 and smtpscreen needs a few descriptors of its own; set
LIMITS_MEMORY_HOLDERS to change it) in the greet wait (greet.wait 120s), spread over 500
source addresses. RSS is read at each step of the ramp; it must stay under
idle + HOLDERS x 4 KiB (each session's buffers are bounded), every holder must get its
'220-' line, and a clean client must still be served at full load. When the holders
leave, every one is logged (HANGUP + one DISCONNECT) and the descriptors are released.
Then the same for 9,500 sessions handed off to a sink backend (two descriptors each;
LIMITS_MEMORY_RELAYED), bounded by 8 KiB a session.
The figures are printed as 'MEMORY FIGURES ...' and recorded in tests/README.md."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

PER_SESSION_KIB = 4.0


def open_holders(screen, count, net, want):
    """count connections to screen from 127.0.<net..>.x (50 per address), each kept once
    its first line starts with want; returns (sockets, [(n, RSS MiB) along the ramp])."""
    ramp = []

    def note_ramp(socks):
        if len(socks) % 5000 < 500 or len(socks) == count:
            ramp.append((len(socks), round(harness.rss_mib(screen.pid), 1)))

    socks = harness.hold_clients(screen.port, count, lambda i: f"127.0.{net + i // 50 // 250}.{i // 50 % 250 + 1}",
                                 want=want, timeout=20, after_batch=note_ramp)
    return socks, ramp


def main(env):
    harness.bound_asan_quarantine()
    soft = harness.raise_own_open_files(20000)
    holders = int(os.environ.get("LIMITS_MEMORY_HOLDERS", "19500"))
    holders = min(holders, soft - 300)
    backend = harness.scripted_backend(env, "smtp")
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "120s",
        "limits.max_connections": "20000", "limits.per_client_connections": "50",
        "cache.backend": "memory", "cache.path": None, "limits.shutdown_grace": "2s"})
    pid = screen.pid
    time.sleep(0.5)
    idle = harness.rss_mib(pid)
    idle_fds = harness.open_fd_count(pid)
    t0 = time.monotonic()
    socks, ramp = open_holders(screen, holders, 30, b"220-")
    ramp_s = time.monotonic() - t0
    full = harness.rss_mib(pid)
    fds = harness.open_fd_count(pid)
    # A clean client is still served at full load.
    c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=10)
    cport = c.local_port
    first = c.read_line(timeout=3)
    check(first.startswith("220-"), f"at full load a new client got {first!r}")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.7", cport, outcome="hangup", settle=0)
    per_session = (full - idle) * 1024 / max(1, len(socks))
    figures = {"holders": len(socks), "ramp_s": round(ramp_s, 1), "rss_idle_mib": round(idle, 1),
               "rss_full_mib": round(full, 1), "kib_per_session": round(per_session, 2),
               "smtpscreen_fds": fds, "ramp": ramp}
    harness.log("MEMORY FIGURES " + " ".join(f"{k}={v}" for k, v in figures.items()))
    check(full <= idle + len(socks) * PER_SESSION_KIB / 1024,
          f"{len(socks)} sessions in the greet wait use {full - idle:.1f} MiB "
          f"({per_session:.1f} KiB each; the bound is {PER_SESSION_KIB} KiB)")

    offset = screen.log_size()
    for s in socks:
        s.close()
    harness.wait_until(lambda: harness.open_fd_count(pid) <= idle_fds + 2, 60,
                       what="smtpscreen releasing the holders' descriptors")
    # The descriptor count allows 2 of slack and the log reaches us through a pipe: give
    # the last lines a moment before counting.
    count = lambda: len(re.findall(r"DISCONNECT \S+ hangup", screen.log_text()[offset:]))
    try:
        harness.wait_until(lambda: count() >= len(socks), 10, what="every holder's DISCONNECT line", interval=0.5)
    except harness.Failure:
        pass  # the check below says how many are missing
    n_disc = count()
    check(n_disc == len(socks), f"{len(socks)} holders left but {n_disc} 'DISCONNECT ... hangup' lines")
    time.sleep(2)
    after = harness.rss_mib(pid)
    harness.log(f"after the holders left: RSS {after:.1f} MiB (idle {idle:.1f}, full {full:.1f})")
    screen.stop()

    # Handed-off sessions cost a backend connection each: half as many, relaying into
    # the asyncio sink, idle after the backend's greeting.
    relayed = min(int(os.environ.get("LIMITS_MEMORY_RELAYED", "9500")), (soft - 300) // 2)
    sink = harness.SinkProcess(env).start()
    relay = env.smtpscreen(name="relay", settings={
        "backend.address": f"127.0.0.1:{sink.port}", "greet.wait": "1s",
        "limits.max_connections": "20000", "limits.per_client_connections": "50",
        "backend.connect_timeout": "20s", "backend.idle_timeout": "300s",
        "cache.backend": "memory", "cache.path": None, "limits.shutdown_grace": "2s"})
    rpid = relay.pid
    time.sleep(0.5)
    ridle = harness.rss_mib(rpid)
    rfds0 = harness.open_fd_count(rpid)
    t0 = time.monotonic()
    rsocks, rramp = open_holders(relay, relayed, 120, b"220 sink.test")
    rfull = harness.rss_mib(rpid)
    rper = (rfull - ridle) * 1024 / max(1, len(rsocks))
    rfigures = {"relayed": len(rsocks), "ramp_s": round(time.monotonic() - t0, 1), "rss_idle_mib": round(ridle, 1),
                "rss_full_mib": round(rfull, 1), "kib_per_session": round(rper, 2),
                "smtpscreen_fds": harness.open_fd_count(rpid), "ramp": rramp}
    harness.log("MEMORY FIGURES (handed off) " + " ".join(f"{k}={v}" for k, v in rfigures.items()))
    check(rfull <= ridle + len(rsocks) * 2 * PER_SESSION_KIB / 1024,
          f"{len(rsocks)} handed-off sessions use {rfull - ridle:.1f} MiB ({rper:.1f} KiB each; "
          f"the bound is {2 * PER_SESSION_KIB} KiB)")
    for s in rsocks:
        s.close()
    harness.wait_until(lambda: harness.open_fd_count(rpid) <= rfds0 + 2, 60,
                       what="smtpscreen releasing the handed-off sessions")
    relay.stop()


harness.run(main, timeout=170)
