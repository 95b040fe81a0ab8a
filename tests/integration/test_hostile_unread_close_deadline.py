#!/usr/bin/env python3
"""A closing socket gets a flush deadline, never more (issue 14, hole 2; docs/design.md,
"Bounded output"). N pregreet bots (greet.action = enforce) each send a burst of 'EHLO x'
lines, never read a reply and never leave; their replies fill the kernel's buffers and
smtpscreen's queue. limits.command_time_limit ends each session (DISCONNECT, connection
slot released) with replies still unsent. Then:
  - within the flush deadline (5 s) and some slack, smtpscreen's open descriptors are
    back to what they were before the bots came (before: each bot's socket, descriptor
    and queue stayed until the bot left, piling up past both connection limits);
  - each socket whose queue the kernel did not take within the deadline was reset, and
    logged '[ip]:port left N byte(s) unread 5s after its connection was closed; reset';
    a bot sees its connection end (reset, or closed);
  - new clients are still accepted and served under limits.max_connections."""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

BOTS = 200
TIME_LIMIT_S = 2
FLUSH_DEADLINE_S = 5
SLACK_S = 4
BURST = b"EHLO x\r\n" * 8000   # 64 KB of commands, ~1 MB of replies


def bot(port, source):
    """A bot whose replies pile up in smtpscreen rather than in the kernel: a small
    receive buffer and a small MSS keep the kernel's share for it small (on loopback,
    with a 64 KiB MSS, Linux would take over a megabyte of replies off smtpscreen's
    hands); a large send buffer takes the whole burst at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 262144)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"E")
    return s


def main(env):
    harness.raise_own_open_files(4096)
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={
        "greet.action": "enforce", "greet.wait": "1s", "limits.command_count_limit": "1000000",
        "limits.command_time_limit": f"{TIME_LIMIT_S}s", "limits.max_connections": str(BOTS + 20),
        "limits.per_client_connections": str(BOTS + 20), "cache.backend": "memory", "cache.path": None})
    harness.clean_session(screen, pf, source="127.0.0.100", tag="warm")
    time.sleep(0.5)
    fds_before = harness.open_fd_count(screen.pid)

    src = "127.0.16.1"
    bots = [bot(screen.port, src) for _ in range(BOTS)]
    ports = [s.getsockname()[1] for s in bots]
    time.sleep(1.5)  # the greet wait: every bot is in the enforce dialog now
    for s in bots:
        s.setblocking(False)
        try:
            s.send(BURST)
        except BlockingIOError:
            pass
    # Every session ends at its command time limit, its replies unread.
    deadline = time.monotonic() + TIME_LIMIT_S + 45  # a loaded machine, an ASan build
    while time.monotonic() < deadline:
        if sum(1 for ln in screen.log_lines() if f"DISCONNECT [{src}]:" in ln) >= BOTS:
            break
        time.sleep(0.2)
    ended_at = time.monotonic()
    disconnects = [ln for ln in screen.log_lines() if f"DISCONNECT [{src}]:" in ln]
    check(len(disconnects) == BOTS, f"{len(disconnects)} of {BOTS} bots got their DISCONNECT")
    fds_at_disconnect = harness.open_fd_count(screen.pid)
    harness.log(f"descriptors: {fds_before} before the bots, {fds_at_disconnect} once all {BOTS} were disconnected")

    # Within the flush deadline, every socket is gone.
    fds = fds_at_disconnect
    while time.monotonic() < ended_at + FLUSH_DEADLINE_S + SLACK_S:
        fds = harness.open_fd_count(screen.pid)
        if fds <= fds_before + 2:
            break
        time.sleep(0.2)
    took = time.monotonic() - ended_at
    harness.log(f"descriptors back to {fds} {took:.1f}s after the last DISCONNECT")
    check(fds <= fds_before + 2,
          f"{fds - fds_before} descriptors still open {took:.1f}s after the last of {BOTS} non-reading clients was "
          f"disconnected (flush deadline {FLUSH_DEADLINE_S}s): a closing socket must be reset at its deadline")
    # Each socket either handed its queue to the kernel within the deadline and closed
    # (the kernel's own orphan handling takes it from there), or was reset, said once.
    resets = [ln for ln in screen.log_lines()
              if f"[{src}]:" in ln and f"unread {FLUSH_DEADLINE_S}s after its connection was closed; reset" in ln]
    harness.log(f"{len(resets)} of {BOTS} sockets were reset at their flush deadline")
    check(len(resets) <= BOTS and all(re.search(r"left \d+ byte\(s\) unread", ln) for ln in resets),
          f"reset lines: {resets[:3]}")

    # A bot sees its connection end: what the kernel held for it, then the reset.
    s = bots[0]
    s.setblocking(True)
    s.settimeout(5)
    ended = None
    try:
        while True:
            if not s.recv(65536):
                ended = "eof"
                break
    except ConnectionResetError:
        ended = "reset"
    except socket.timeout:
        ended = None
    check(ended is not None, "the first bot's connection is still open after its flush deadline")
    harness.log(f"a bot saw its connection end with a {ended}")
    for s in bots:
        s.close()

    # New clients are accepted and screened as before.
    for i in range(3):
        harness.clean_session(screen, pf, source=f"127.0.16.{10 + i}", tag=f"after{i}")
    check(all(p for p in ports), "bots had ports")
    screen.stop()


harness.run(main)
