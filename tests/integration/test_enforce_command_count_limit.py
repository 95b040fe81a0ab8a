#!/usr/bin/env python3
"""The enforce dialog honours limits.command_count_limit, as postscreen's one SMTP
engine does (issue 14, hole 1). A pregreet bot (greet.action = enforce, the default
configuration otherwise) that streams 'EHLO x' lines one send() at a time and never
reads a reply used to be answered without end, its replies piling up in smtpscreen's
memory (~35 MB in 30 s). Now:
  - 'COMMAND COUNT LIMIT from [ip]:port' is logged and the session ends with one
    'DISCONNECT [ip]:port rejected' within seconds of the greeting, the client's socket
    closed under it;
  - no more than command_count_limit EHLO replies (and the 421) were written;
  - smtpscreen's RSS grows by less than 30 MiB over the whole run;
  - a client that reads its replies sees them, then '421 4.7.0 <host> Error: too many
    commands' after the limit (3 here), and QUIT stays answered at the limit."""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

MAX_GROWTH_MIB = 30.0
STREAM_SECONDS = 20   # how long the bot keeps sending if nobody stops it
# A few lines per send() and a pause between sends, so that each of smtpscreen's reads
# holds only a few commands, as from a bot on the other side of the Internet: in one
# big burst the old code gave up on its own ("too many pipelined commands") and the
# hole did not show.
BATCH = b"EHLO x\r\n" * 8


def stream_until_closed(sock, seconds):
    """Sends BATCH after BATCH, never reading, until the peer closes the connection or
    `seconds` pass. Returns (lines sent, how it ended)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(BATCH)
        except socket.timeout:
            continue  # our send buffer is full: smtpscreen is not reading; keep trying
        except (BrokenPipeError, ConnectionResetError):
            return sent, "closed"
        sent += BATCH.count(b"\n")
        time.sleep(0.001)
    return sent, "still open"


def main(env):
    harness.bound_asan_quarantine()
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={
        "greet.action": "enforce", "greet.wait": "1s", "cache.backend": "memory", "cache.path": None})
    small = env.smtpscreen(postfix=pf, name="small", settings={
        "greet.action": "enforce", "greet.wait": "1s", "limits.command_count_limit": "3"})
    harness.clean_session(screen, pf, source="127.0.0.100", tag="warm")

    # --- the bot: one byte before the greeting, then EHLO lines it never reads replies to
    src = "127.0.14.1"
    c = harness.SmtpClient(screen.port, source=src, timeout=10)
    port = c.local_port
    c.send("E")
    screen.wait_for_log(harness.re_pregreet(src, port))
    before = harness.rss_mib(screen.pid)
    sampler = harness.RssSampler(screen.pid, 0.05)
    started = time.monotonic()
    try:
        sent, how = stream_until_closed(c.sock, STREAM_SECONDS)
    finally:
        peak = sampler.stop()
    took = time.monotonic() - started
    harness.log(f"bot: {sent} lines sent in {took:.1f}s, {how}; RSS {before:.1f} -> peak {peak:.1f} MiB")
    check(how == "closed",
          f"the bot streamed {sent} EHLO lines for {STREAM_SECONDS}s and its connection is still open: "
          f"the enforce dialog must close it after limits.command_count_limit (20) commands")
    _, secs = harness.check_one_disconnect(screen, src, port, outcome="rejected")
    check(secs < 4.0, f"the bot's session lasted {secs}s (greet.wait is 1s): it must end at its 21st command")
    screen.wait_for_log(rf"COMMAND COUNT LIMIT from {harness.ip_port(src, port)}", timeout=5)
    check(peak - before < MAX_GROWTH_MIB,
          f"smtpscreen's RSS grew by {peak - before:.1f} MiB (from {before:.1f} to {peak:.1f}) while a client "
          f"streamed EHLO lines; the bound is {MAX_GROWTH_MIB} MiB")
    # What reached the client before the close, if the kernel kept it: never more
    # EHLO replies than the limit allows.
    got = c.drain(quiet=0.3, limit=2).decode(errors="replace")
    replies = got.count("250-SIZE")
    check(replies <= 20, f"the bot got {replies} EHLO replies; limits.command_count_limit is 20")
    c.close()

    # --- a client that reads: the replies up to the limit, then the 421; QUIT at the limit
    src = "127.0.14.2"
    c = harness.SmtpClient(small.port, source=src, timeout=10)
    port = c.local_port
    c.send("EHLO early\r\n")
    check(c.read_reply(timeout=5).code == 220, "the greeting must end with our 220 (enforce)")
    c.drain(0.3, 1)  # whatever answers the pregreet bytes
    c.expect("EHLO x", 250)
    c.expect("NOOP", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    last = c.cmd("RCPT TO:<user@example.test>")
    check(last.code == 421 and re.fullmatch(r"421 4\.7\.0 \S+ Error: too many commands", last.final),
          f"the 4th command with limits.command_count_limit = 3: expected "
          f"'421 4.7.0 <host> Error: too many commands', got {last.text!r}")
    c.check_closed(5, "after the command count limit")
    small.wait_for_log(rf"COMMAND COUNT LIMIT from {harness.ip_port(src, port)}")
    harness.check_one_disconnect(small, src, port, outcome="rejected")

    src = "127.0.14.3"
    c = harness.SmtpClient(small.port, source=src, timeout=10)
    port = c.local_port
    c.send("EHLO early\r\n")
    check(c.read_reply(timeout=5).code == 220, "the greeting must end with our 220 (enforce)")
    c.drain(0.3, 1)
    for _ in range(3):
        c.expect("NOOP", 250)
    c.expect("QUIT", 221)
    c.check_closed(5, "after QUIT")
    harness.check_one_disconnect(small, src, port, outcome="rejected")
    check("127.0.14." not in pf.log(), "Postfix saw an enforced client: it was handed off")
    screen.stop()
    small.stop()


harness.run(main)
