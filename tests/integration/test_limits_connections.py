#!/usr/bin/env python3
"""limits.max_connections and limits.per_client_connections (docs/design.md, step 1, issue 6):
a connection over either limit gets '421 4.7.0' at once (no '220-' banner first) and is
closed, logs 'NOQUEUE: reject: CONNECT ... too many connections (<key>)' and one
'DISCONNECT ... too-many-connections', and never reaches the backend (the private
Postfix logs no connection for it). Sessions count whatever their phase (greet wait or
handed off and relaying). Once the holders leave, new clients are accepted again and a
message goes through end to end; a burst of refused clients leaks no slot."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def expect_refused(screen, source, which, settle=0.3):
    c = harness.SmtpClient(screen.port, source=source, timeout=5)
    port = c.local_port
    reply = c.read_reply(timeout=3)
    t = c.elapsed()
    check(reply.code == 421 and reply.final.startswith("421 4.7.0"),
          f"{which}: client [{source}]:{port} expected '421 4.7.0 ...', got {reply.text!r}")
    check(len(reply.lines) == 1, f"{which}: the 421 must be the whole answer (no '220-' first): {reply.text!r}")
    check(t < 1.0, f"{which}: the 421 took {t:.2f}s; it must come at once")
    c.check_closed(3, f"{which}: after the 421")
    c.close()
    screen.wait_for_log(rf"NOQUEUE: reject: CONNECT from {harness.ip_port(source, port)}: "
                        rf"too many connections \({re.escape(which)}\)")
    harness.check_one_disconnect(screen, source, port, outcome="too-many-connections", settle=settle)
    return port, reply.final


def main(env):
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={
        "limits.max_connections": "4", "limits.per_client_connections": "2",
        "greet.wait": "1s", "cache.backend": "memory", "cache.path": None})

    # Two holders from 127.0.0.7 that pass and are handed off to Postfix (relaying).
    holders = []
    for _ in range(2):
        c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=10)
        holders.append(c)
    for c in holders:
        reply = c.read_greeting(timeout=8)
        check(reply.code == 220 and "backend.test" in reply.final,
              f"holder: expected the backend's 220 after the greet wait, got {reply.text!r}")
        c.ehlo()
    refused = []
    # A third from the same address: per-client limit.
    refused.append(("127.0.0.7",) + expect_refused(screen, "127.0.0.7", "limits.per_client_connections"))

    # Two more holders from other addresses, still in the greet wait: total 4.
    waiting = []
    for src in ("127.0.0.8", "127.0.0.9"):
        c = harness.SmtpClient(screen.port, source=src, timeout=10)
        first = c.read_line(timeout=3)
        check(first.startswith("220-"), f"holder {src}: expected '220-', got {first!r}")
        waiting.append(c)
    for src in ("127.0.0.11", "127.0.0.12"):
        refused.append((src,) + expect_refused(screen, src, "limits.max_connections"))

    # A burst of refused clients (different addresses): every one 421, none leaks a slot.
    for i in range(30):
        src = f"127.0.5.{i + 1}"
        refused.append((src,) + expect_refused(screen, src, "limits.max_connections", settle=0))

    # None of the refused clients ever reached Postfix (give it time to log).
    time.sleep(1.5)
    plog = pf.log()
    for src, port, _ in refused:
        check(not re.search(harness.postfix_client_regex(src, port), plog),
              f"Postfix saw refused client [{src}]:{port}: the limit let it through to the backend")
    for src in ("127.0.0.11", "127.0.0.12", "127.0.5.1"):
        check(f"[{src}]" not in plog, f"Postfix saw refused client {src}")
    check(len(re.findall(r"\bconnect from ", plog)) <= 4,
          f"Postfix logged more connections than the 4 holders:\n{harness.tail(plog, 20)}")

    # One holder from .7 leaves: .7 may connect again (per-client slot freed, total 3 -> 4).
    holders[0].expect("QUIT", 221)
    holders[0].check_closed(5, "holder after QUIT")
    harness.wait_until(lambda: harness.disconnect_lines(screen, "127.0.0.7", holders[0].local_port), 5,
                       what="the first holder's DISCONNECT")
    again = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=10)
    first = again.read_line(timeout=3)  # a cached pass: PASS OLD and the backend's 220 at once
    check(first.startswith("220"), f"after a holder left, .7 must be accepted again; got {first!r}")
    # Full again: the next one is refused.
    refused.append(("127.0.0.13",) + expect_refused(screen, "127.0.0.13", "limits.max_connections"))

    # Everyone leaves; then a whole message goes through, and 4 at once are accepted.
    for c in holders[1:] + waiting + [again]:
        c.close()
    harness.wait_until(lambda: len(re.findall(r"DISCONNECT \[127\.0\.0\.(7|8|9)\]", screen.log_text())) >= 5,
                       10, what="every holder's DISCONNECT")
    harness.clean_session(screen, pf, source="127.0.0.11", tag="limits")
    four = [harness.SmtpClient(screen.port, source=f"127.0.6.{i + 1}", timeout=10) for i in range(4)]
    for c in four:
        first = c.read_line(timeout=3)
        check(first.startswith("220-"), f"after the holders left, 4 new clients must be accepted; got {first!r}")
    for c in four:
        c.close()
    log_text = screen.log_text()
    n_refused = len(re.findall(r"too many connections", log_text))
    check(n_refused == len(refused), f"{n_refused} 'too many connections' lines for {len(refused)} refused clients")
    for src, port, _ in refused:
        lines = harness.disconnect_lines(screen, src, port)
        check(len(lines) == 1, f"refused client [{src}]:{port}: expected one DISCONNECT line, got {lines}")
    harness.log(f"refused {len(refused)} clients with {refused[0][2]!r} / {refused[1][2]!r}")
    screen.stop()


harness.run(main)
