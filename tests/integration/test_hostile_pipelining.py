#!/usr/bin/env python3
"""Thousands of pipelined commands (issue 6). For each: the answer smtpscreen gives,
exactly one DISCONNECT line, smtpscreen's RSS stays bounded (< 30 MiB growth).
  1. 5,000 commands before the greeting: one PREGREET line; none of them is answered
     (postscreen discards what comes before the greeting); the client then gets the
     final 220 and the enforce dialog;
  2. 5,000 NOOPs in one burst in the enforce dialog: bounded (smtpscreen answers some
     and closes with a 421, or answers them all; it never queues them without limit);
  3. 5,000 commands in one burst during the deep tests (PIPELINING was not offered):
     'COMMAND PIPELINING' logged, the client is not handed off, the session ends;
  4. after a handoff to a backend that offers PIPELINING: 5,000 NOOPs get 5,000
     replies, in order; a whole transaction with 1,000 RCPTs sent in one write gets
     every reply and the message is accepted once."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

N = 5000


def main(env):
    targets = harness.HostileTargets(env)
    backend, screen, deep, answers = targets.backend, targets.screen, targets.deep, targets.answers

    # 1. Before the greeting.
    c = harness.SmtpClient(screen.port, source="127.0.15.1", timeout=10)
    port = c.local_port
    c.send(b"EHLO bot\r\n" + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n" * (N // 2))
    got = c.drain(quiet=2.0, limit=8)
    lines = got.decode(errors="replace").splitlines()
    check(lines and lines[-1].startswith("220 "), f"before the greeting: expected the final 220, got {lines[-3:]}")
    check(len(lines) <= 3, f"before the greeting: {len(lines)} reply lines to commands that came before it")
    c.expect("EHLO client.example.org", 250)
    c.expect("QUIT", 221)
    harness.check_one_disconnect(screen, "127.0.15.1", port, outcome="rejected")
    check(len(re.findall(rf"PREGREET .* from {re.escape(f'[127.0.15.1]:{port}')}:", screen.log_text())) == 1,
          "expected one PREGREET line")
    answers["1 before the greeting"] = f"PREGREET once; {len(lines)} line(s): {lines[-1]!r}; the commands unanswered"

    # 2. The enforce dialog.
    c = harness.SmtpClient(screen.port, source="127.0.15.2", timeout=10)
    port = c.local_port
    c.send("EHLO early\r\n")
    c.read_reply(timeout=5)
    c.drain(0.3, 1)
    try:
        c.send(b"NOOP\r\n" * N)
    except OSError:
        pass
    got = c.drain(quiet=2.0, limit=10)
    closed = c.eof or c.wait_closed(3)
    lines = got.decode(errors="replace").splitlines()
    n250 = sum(1 for ln in lines if ln.startswith("250"))
    last = lines[-1] if lines else ""
    if not closed:
        c.send("QUIT\r\n")
        c.check_closed(5, "enforce after the burst and QUIT")
    outcome, _ = harness.check_one_disconnect(screen, "127.0.15.2", port)
    check(n250 == N or last.startswith("421"),
          f"enforce: {N} NOOPs got {n250} 250s and then {last!r}; expected all of them or a 421")
    answers["2 enforce dialog"] = f"{n250} x 250, then {last!r}; outcome {outcome}"

    # 3. Deep tests.
    c = harness.deep_client(deep, "127.0.15.3")
    port = c.local_port
    try:
        c.send(b"EHLO bot.example\r\n" + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nRSET\r\n" * (N // 3))
    except OSError:
        pass
    got = c.drain(quiet=2.0, limit=10)
    lines = got.decode(errors="replace").splitlines()
    if not c.eof:
        try:
            c.send("QUIT\r\n")
        except OSError:
            pass
        c.wait_closed(5)
    deep.wait_for_log(rf"COMMAND PIPELINING from {harness.ip_port('127.0.15.3', port)}")
    outcome, _ = harness.check_one_disconnect(deep, "127.0.15.3", port)
    check(outcome != "handoff", f"deep: a pipelining client was handed off ({outcome})")
    check(not any(r["proxy"] and r["proxy"][1] == port for r in backend.connections),
          "deep: the pipelining client reached the backend")
    check(len(lines) <= 100, f"deep: {len(lines)} reply lines to a pipelined burst (expected the command limit to stop it)")
    answers["3 deep tests"] = f"COMMAND PIPELINING logged; {len(lines)} reply lines, the last ones {lines[-4:]!r}; outcome {outcome}"

    # 4. After a handoff.
    c = harness.SmtpClient(screen.port, source="127.0.15.4", timeout=20)
    port = c.local_port
    c.read_greeting()
    c.send(b"NOOP\r\n" * N)
    got = b""
    for _ in range(200):
        got += c.drain(quiet=1.0, limit=2)
        if got.count(b"\r\n") >= N:
            break
    n = got.count(b"250 2.0.0 Ok\r\n")
    check(n == N, f"after handoff: {N} pipelined NOOPs got {n} replies")
    rcpts = 1000
    marker = harness.unique_marker("pipelined")
    c.send("EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n" +
           "".join(f"RCPT TO:<r{i}@example.test>\r\n" for i in range(rcpts)) + "DATA\r\n")
    replies = [c.read_reply(timeout=10) for _ in range(2 + rcpts + 1)]
    check(all(r.code == 250 for r in replies[:-1]) and replies[-1].code == 354,
          f"after handoff: pipelined transaction replies {[r.code for r in replies][:5]}...{replies[-1].text!r}")
    c.send(harness.message_text(marker) + ".\r\nQUIT\r\n")
    c.expect(None, 250)
    c.expect(None, 221)
    harness.check_one_disconnect(screen, "127.0.15.4", port, outcome="handoff")
    msgs = [m for m in backend.messages() if marker.encode() in m]
    check(len(msgs) == 1, f"after handoff: the pipelined message reached the backend {len(msgs)} times")
    answers["4 after handoff"] = f"{N} replies in order; 1,000-RCPT transaction in one write: all 250, message once"

    targets.finish()


harness.run(main)
