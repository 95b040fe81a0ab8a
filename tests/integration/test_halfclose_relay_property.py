#!/usr/bin/env python3
"""Property test of the relay with random half-close points (issue 22, docs/design.md
"Half-close"): for HALFCLOSE_CASES random sessions (200 by default, at most 45 s; the
seed is printed, HALFCLOSE_SEED replays one run), a client handed off at once (access
list permit) pipelines a random SMTP session (commands, maybe a DATA transaction whose
content it does not wait to send, maybe a final QUIT), written in random pieces with
random pauses, and half-closes after a random number of its lines. The scripted backend
answers every line, and in some cases half-closes itself after a random number of
replies (then answers nothing more and reads on). For every case:
  - no reply is lost: the client receives exactly the bytes the backend sent, then EOF;
  - when the backend did not stop answering early, it receives exactly what the client
    sent, then smtpscreen's EOF (a FIN, not a reset); when it did, a prefix of it;
  - the session ends (one DISCONNECT ... handoff) without waiting for the idle timeout."""
import os
import random
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.0.7"
COMMANDS = ("NOOP", "RSET", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.test>", "VRFY postmaster",
            "HELP")


def random_session(rng):
    """(lines, replies_due_per_line, data_line_index or None): each line ends in CRLF;
    replies_due[i] is 1 when line i gets a reply of its own."""
    lines, due, data_at = [], [], None
    for _ in range(rng.randint(0, 6)):
        lines.append(rng.choice(COMMANDS) + "\r\n")
        due.append(1)
    if rng.random() < 0.6:
        data_at = len(lines)
        lines.append("DATA\r\n")
        due.append(1)
        for n in range(rng.randint(0, 5)):
            text = rng.choice(("Subject: half-close", "", "..a dot-stuffed line", "body line %d" % n,
                               "x" * rng.randint(1, 200)))
            lines.append(text + "\r\n")
            due.append(0)
        lines.append(".\r\n")
        due.append(1)
        for _ in range(rng.randint(0, 2)):
            lines.append(rng.choice(COMMANDS) + "\r\n")
            due.append(1)
    if rng.random() < 0.6:
        lines.append("QUIT\r\n")
        due.append(1)
    return lines, due, data_at


def send_in_pieces(rng, c, data):
    """Writes data in random pieces with random short pauses; False once smtpscreen
    stopped taking bytes (the session ended early, which the checks judge)."""
    at = 0
    while at < len(data):
        n = rng.randint(1, max(1, len(data) - at))
        try:
            c.sock.sendall(data[at:at + n])
        except OSError:
            return False
        at += n
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.02)
    return True


def run_case(rng, index, screen, backend):
    lines, due, data_at = random_session(rng)
    cut = len(lines) if rng.random() < 0.6 else rng.randint(0, len(lines))
    sent_lines = lines[:cut]
    replies_due = sum(due[:cut])
    # The backend half-closes after k replies (None: only after its 221, as Postfix closes).
    k = None if rng.random() < 0.5 else rng.randint(0, replies_due + 1)
    backend.half_close_after = k
    what = f"case {index}: lines {sent_lines!r}, client half-closes after {cut}/{len(lines)} lines, " \
           f"backend half-closes after {k} replies"

    before = len(backend.connections)
    since = len(screen.log_text())
    c = harness.SmtpClient(screen.port, source=CLIENT, timeout=10)
    port = c.local_port
    data = "".join(sent_lines).encode()
    if send_in_pieces(rng, c, data):
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    try:
        c.replies_until_eof(timeout=10)
    except harness.Failure as e:
        harness.fail(f"{what}: {e}")
    received = b"".join(chunk for who, chunk in c.transcript if who == "S")
    c.close()
    backend.wait_connections(before + 1)
    rec = backend.connections[before]
    harness.wait_until(lambda: rec["closed"], 10, what=f"{what}: the backend's connection to end")
    with backend.lock:
        sent_by_backend = rec["sent"]
        got = rec["data"]
    check(received == sent_by_backend,
          f"{what}: a reply was lost or changed: the backend sent {sent_by_backend!r}, "
          f"the client received {received!r}")
    _, _, _, _, header = harness.parse_proxy_v2(got)
    got = got[header:]
    stopped_early = k is not None and k < replies_due
    if not stopped_early:
        check(got == data, f"{what}: the backend must receive exactly what the client sent: "
                           f"sent {data!r}, received {got!r}")
        check(rec["eof"] or (rec["self_closed"] and not rec["reset"]),
              f"{what}: the backend's connection ended in a reset, not in the passed-on EOF")
    else:
        check(data.startswith(got), f"{what}: the backend received {got!r}, not a prefix of {data!r}")
    # Source ports come round again over many cases: only this case's log lines count.
    exact = harness.re_disconnect_exact(CLIENT, port)
    screen.wait_for_log(exact, timeout=10, since=since)
    lines = [ln for ln in screen.log_text()[since:].splitlines() if re.search(exact, ln)]
    check(len(lines) == 1, f"{what}: expected one DISCONNECT line, got {lines}")
    outcome, secs = harness.disconnect_outcome(lines[0])
    check(outcome == "handoff", f"{what}: outcome {lines[0]!r}")
    return secs


def main(env):
    seed = int(os.environ.get("HALFCLOSE_SEED", str(int(time.time() * 1000) % 1000000007)))
    cases = int(os.environ.get("HALFCLOSE_CASES", "200"))
    print(f"HALFCLOSE_SEED={seed} (replay with this variable), {cases} cases", flush=True)
    rng = random.Random(seed)
    backend = harness.scripted_backend(env, "smtp")
    access = os.path.join(env.dir, "access.cidr")
    with open(access, "w") as f:
        f.write(f"{CLIENT} permit\n")
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "access.file": access,
        "cache.backend": "memory", "cache.path": None, "backend.idle_timeout": "30s"})
    started = time.monotonic()
    longest = 0.0
    done = 0
    for i in range(cases):
        if time.monotonic() - started > 45:
            break
        longest = max(longest, run_case(rng, i, screen, backend))
        done += 1
    check(done >= min(cases, 10), f"only {done} cases ran in 45 s")
    harness.log(f"HALFCLOSE_SEED={seed}: {done} cases, no reply lost; longest session {longest:.2f}s")


harness.run(main, timeout=150)
