#!/usr/bin/env python3
"""NUL and 8-bit bytes (issue 6) wherever a client can send them. For each: the answer
smtpscreen gives, exactly one DISCONNECT line, nothing unprintable in the log (a client
cannot split or forge log lines), and smtpscreen's RSS stays bounded.
  1. before the greeting: one PREGREET line whose excerpt shows the bytes escaped;
     greet.action = enforce then rejects RCPT with '550 5.5.1 Protocol error';
  2. in the enforce dialog: NULs and 8-bit bytes inside commands get error replies
     or are ignored, and QUIT still works;
  3. during the deep tests: a line that starts with a NUL or an 8-bit byte fails the
     non-SMTP command test (NON-SMTP COMMAND logged, then 550 5.5.1 on RCPT); NULs and
     8-bit bytes inside an otherwise valid command do not crash anything;
  4. after a handoff: command lines and message text with NULs and 8-bit bytes reach the
     backend byte for byte (smtpscreen does not rewrite them), and so do the replies."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

EIGHT_BIT = bytes(range(0x80, 0x100))
NASTY = b"\x00\x01\x1b[2J\x7f" + EIGHT_BIT[:16] + b"\x00"


def check_log_printable(screen):
    text = open(screen.log_path, "rb").read()
    bad = [b for b in set(text) if (b < 0x20 and b not in (0x0a, 0x09)) or b >= 0x7f]
    check(not bad, f"{screen.name}: raw control/8-bit bytes in the log: {sorted(bad)[:10]}")


def main(env):
    targets = harness.HostileTargets(env)
    backend, screen, deep, answers = targets.backend, targets.screen, targets.deep, targets.answers

    # 1. Before the greeting.
    c = harness.SmtpClient(screen.port, source="127.0.14.1", timeout=10)
    port = c.local_port
    c.send(b"\x00\x00\xff\xfe" + NASTY + b"EHLO \xc3\xa9t\xc3\xa9\r\n")
    reply = c.read_reply(timeout=5)
    check(reply.code == 220, f"NUL/8-bit before the greeting: expected 220 (enforce), got {reply.text!r}")
    m = screen.wait_for_log(rf"PREGREET (\d+) after \S+ from {harness.ip_port('127.0.14.1', port)}: (.*)")
    check(r"\x00" in m.group(2) or "?" in m.group(2), f"the PREGREET excerpt does not show the NULs escaped: {m.group(0)!r}")
    c.drain(0.3, 1)
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 550, r"^550 5\.5\.1 Protocol error")
    c.expect("QUIT", 221)
    harness.check_one_disconnect(screen, "127.0.14.1", port, outcome="rejected")
    answers["before the greeting"] = f"PREGREET logged as {m.group(2)[:60]!r}; 220, RCPT 550 5.5.1"

    # 2. The enforce dialog.
    c = harness.SmtpClient(screen.port, source="127.0.14.2", timeout=10)
    port = c.local_port
    c.send("HELO early\r\n")
    c.read_reply(timeout=5)
    c.drain(0.3, 1)
    got = []
    for line in (b"\x00\x00\x00\r\n", b"EHLO a\x00b\r\n", b"MAIL FROM:<\xff\xfe@example.org>\r\n",
                 EIGHT_BIT + b"\r\n", b"RCPT TO:<x\x00@example.test>\r\n"):
        c.send(line)
        r = c.read_reply(timeout=5)
        got.append(r.final)
    c.expect("QUIT", 221)
    c.check_closed(3)
    harness.check_one_disconnect(screen, "127.0.14.2", port, outcome="rejected")
    answers["enforce dialog"] = "; ".join(got)

    # 3. Deep tests: a line starting with NUL; a line starting with an 8-bit byte.
    for src, first in (("127.0.14.3", b"\x00EHLO client.example.org\r\n"), ("127.0.14.4", b"\xffEHLO x\r\n")):
        c = harness.deep_client(deep, src)
        port = c.local_port
        c.send(first)
        r = c.read_reply(timeout=5)
        deep.wait_for_log(rf"NON-SMTP COMMAND from {harness.ip_port(src, port)}")
        c.expect("EHLO client.example.org", 250)
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<b@example.test>", 550, r"^550 5\.5\.1 Protocol error")
        c.expect("QUIT", 221)
        harness.check_one_disconnect(deep, src, port, outcome="rejected")
        answers[f"deep tests, line starting {first[:1]!r}"] = f"{r.final!r}; NON-SMTP COMMAND logged; RCPT 550 5.5.1"
    # ... and inside otherwise valid commands.
    c = harness.deep_client(deep, "127.0.14.5")
    port = c.local_port
    got = []
    for line in (b"EHLO cl\x00ient\xff.example.org\r\n", b"MAIL FROM:<\xc3\xa9@example.org>\r\n",
                 b"RCPT TO:<b\x00@example.test>\r\n"):
        c.send(line)
        got.append(c.read_reply(timeout=5).final)
    c.send("QUIT\r\n")
    c.check_closed(5)
    outcome, _ = harness.check_one_disconnect(deep, "127.0.14.5", port)
    answers["deep tests, bytes inside commands"] = "; ".join(got) + f"; outcome {outcome}"

    # 4. After a handoff: byte for byte to the backend and back.
    c = harness.SmtpClient(screen.port, source="127.0.14.6", timeout=10)
    port = c.local_port
    reply = c.read_greeting()
    check("scripted.test" in reply.final, f"expected the backend's 220, got {reply.text!r}")
    commands = b"EHLO cl\x00ient\xff\r\nNOOP \x00\x01\x02" + EIGHT_BIT + b"\r\n"
    c.send(commands)
    c.read_reply(timeout=5)
    c.read_reply(timeout=5)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 250)
    c.expect("DATA", 354)
    body = (b"Subject: bytes\r\n\r\nNUL:\x00 here\r\n8-bit: " + EIGHT_BIT + b"\r\n" + NASTY + b"\r\n")
    c.send(body + b".\r\n")
    final = c.read_reply(timeout=5)
    check(final.code == 250, f"after handoff, a message with NUL/8-bit bytes: the backend's 250 expected, got {final.text!r}")
    c.expect("QUIT", 221)
    harness.check_one_disconnect(screen, "127.0.14.6", port, outcome="handoff")
    rec = next(r for r in backend.connections if r["proxy"] and r["proxy"][1] == port)
    check(commands in rec["data"], f"the command bytes did not reach the backend unchanged: {rec['data'][:200]!r}")
    check(body in rec["data"], "the message bytes did not reach the backend unchanged")
    answers["after handoff"] = f"relayed byte for byte; backend's {final.final!r}"

    targets.finish(also_check=check_log_printable)


harness.run(main)
