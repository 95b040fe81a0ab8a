#!/usr/bin/env python3
"""A client that streams commands and never reads the replies is held to a bounded
output (issue 14, hole 1; docs/design.md, "Bounded output"). With
limits.command_count_limit at 1000000, so that the output cap and not the command count
is what holds it:
  - a pregreet bot (greet.action = enforce) streaming 'EHLO x' lines as fast as it
    can, and a client doing the same after the deep tests' greeting, each stall: smtpscreen
    stops reading them once about 64 KiB of replies wait unsent;
  - smtpscreen's RSS grows by less than MAX_GROWTH_MIB meanwhile (before: every line
    was answered and every reply queued, ~20 octets of memory per octet sent);
  - limits.command_time_limit then ends each session: '... did not read its replies
    (N byte(s) unsent) within limits.command_time_limit', 'COMMAND TIME LIMIT', one
    'DISCONNECT ... timeout'."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

MAX_GROWTH_MIB = 16.0
STREAM_BYTES = 3 * 1024 * 1024   # 393,216 'EHLO x' lines; before the fix ~60 MB of replies
TIME_LIMIT_S = 4


def small_buffered_client(screen, source):
    """A client socket whose kernel buffers are small and fixed (no autotuning), so
    that it is smtpscreen, not the kernel, that holds what the client does not read."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", screen.port))
    return s


def read_until(sock, token, timeout=10):
    data = b""
    deadline = time.monotonic() + timeout
    while token not in data:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        check(chunk, f"connection closed before {token!r}; got {data!r}")
        data += chunk
    return data


def stream_and_measure(screen, sock, src, what):
    port = sock.getsockname()[1]
    before = harness.rss_mib(screen.pid)
    sampler = harness.RssSampler(screen.pid, 0.05)
    try:
        sent, how = harness.pump_bytes(sock, STREAM_BYTES, pattern=b"EHLO x\r\n", stall=2.0, limit=20.0)
        time.sleep(1.0)  # whatever smtpscreen still had to process
    finally:
        peak = sampler.stop()
    harness.log(f"{what}: {sent} bytes sent, {how}; RSS {before:.1f} -> peak {peak:.1f} MiB")
    check(how in ("stalled", "closed"),
          f"{what}: the client sent all {sent} bytes of 'EHLO x' lines without reading a reply "
          f"({how}): smtpscreen must stop reading it once its replies wait unsent")
    check(peak - before < MAX_GROWTH_MIB,
          f"{what}: smtpscreen's RSS grew by {peak - before:.1f} MiB (from {before:.1f} to {peak:.1f}) while a "
          f"client streamed {sent} bytes of EHLO lines without reading; the bound is {MAX_GROWTH_MIB} MiB")
    screen.wait_for_log(rf"{harness.ip_port(src, port)} did not read its replies \(\d+ byte\(s\) unsent\) "
                        r"within limits\.command_time_limit", timeout=TIME_LIMIT_S + 10)
    screen.wait_for_log(rf"COMMAND TIME LIMIT from {harness.ip_port(src, port)}", timeout=5)
    harness.check_one_disconnect(screen, src, port, outcome="timeout", timeout=10)
    sock.close()


def main(env):
    global MAX_GROWTH_MIB
    if harness.bound_asan_quarantine():
        # ASan's quarantine (16 MB here) and redzones hold freed memory: what is bounded
        # is the same, the figure is not. The stall is the proof either way.
        MAX_GROWTH_MIB = 40.0
    pf = env.postfix()
    common = {"greet.wait": "1s", "limits.command_count_limit": "1000000",
              "limits.command_time_limit": f"{TIME_LIMIT_S}s", "cache.backend": "memory", "cache.path": None}
    enforce = env.smtpscreen(postfix=pf, name="enforce", settings=dict(common, **{"greet.action": "enforce"}))
    deep = env.smtpscreen(postfix=pf, name="deep", settings=harness.deep_settings(common))
    harness.clean_session(enforce, pf, source="127.0.0.100", tag="warm")

    # --- a pregreet bot in the enforce dialog
    src = "127.0.15.1"
    s = small_buffered_client(enforce, src)
    s.sendall(b"E")
    enforce.wait_for_log(harness.re_pregreet(src, s.getsockname()[1]))
    read_until(s, b"220 ", timeout=10)
    stream_and_measure(enforce, s, src, "enforce")

    # --- a client in the deep-test dialog (its pipelining fails, and it is enforced)
    src = "127.0.15.2"
    s = small_buffered_client(deep, src)
    read_until(s, b"220 ", timeout=10)
    stream_and_measure(deep, s, src, "deep")
    check("127.0.15." not in pf.log(), "Postfix saw a client that never read its replies")
    enforce.stop()
    deep.stop()


harness.run(main)
