#!/usr/bin/env python3
"""The greet wait and clients that hang up during it (docs/design.md, step 4 and "Log lines", issue 6):
  - a quiet client gets the '220-' line at once and the final 220 when greet.wait ends
    (2s here: not before, and not much after);
  - a client that hangs up during the greet wait logs 'HANGUP after t from [ip]:port in
    tests before SMTP handshake' with t close to when it left, and exactly one
    'DISCONNECT ... hangup'; it never reaches the backend and earns no cached pass;
  - a client that hangs up while its DNSBL lookup is still pending after the greet wait
    (a DNS server that never answers) is logged the same way;
  - a client that resets the connection (RST) is logged the same way;
  - twenty clients that hang up at once are each logged once."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def hangup_after(screen, source, seconds, reset=False):
    c = harness.SmtpClient(screen.port, source=source, timeout=5)
    port = c.local_port
    first = c.read_line(timeout=2)
    check(first.startswith("220-"), f"[{source}]: expected '220-' at once, got {first!r}")
    time.sleep(seconds)
    if reset:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    m = screen.wait_for_log(rf"HANGUP after ([0-9.]+) from {harness.ip_port(source, port)} "
                            rf"in tests before SMTP handshake")
    t = float(m.group(1))
    check(abs(t - seconds) < 0.5, f"[{source}]: HANGUP after {t}s, but the client left after {seconds}s")
    outcome, _ = harness.check_one_disconnect(screen, source, port, outcome="hangup")
    return port


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    silent_dns = harness.scripted_dns(env, {"slow.test": "silent"})
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "2s",
        "dnsbl.servers": f"127.0.0.1:{silent_dns.port}", "dnsbl.sites": "slow.test",
        "dnsbl.timeout": "4s"})

    # A quiet client, on a server without DNSBL sites: the greet wait alone.
    plain = env.smtpscreen(name="plain", settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "2s"})
    c = harness.SmtpClient(plain.port, source="127.0.0.7", timeout=10)
    reply = c.read_greeting(timeout=8)
    t_first = reply.t_first
    t_final = reply.t_final
    check(t_first < 0.5, f"the '220-' line took {t_first:.2f}s")
    check(1.9 <= t_final <= 2.8, f"the final 220 came after {t_final:.2f}s (greet.wait 2s)")
    check("scripted.test" in reply.final, f"the final 220 must be the backend's, got {reply.text!r}")
    c.expect("QUIT", 221)
    c.close()

    # Hang-ups in the greet wait: at 0.3s, 1.2s, and with a RST.
    ports = [hangup_after(plain, "127.0.0.8", 0.3), hangup_after(plain, "127.0.0.9", 1.2),
             hangup_after(plain, "127.0.0.11", 0.5, reset=True)]
    for src in ("127.0.0.8", "127.0.0.9", "127.0.0.11"):
        plain.check_no_log(harness.re_pass_new(src))
        check(not any(r["proxy"] and r["proxy"][0] == src for r in backend.connections),
              f"{src} hung up in the greet wait but reached the backend")

    # A hang-up after the greet wait while the DNSBL lookup is still pending (silent DNS):
    # still 'in tests before SMTP handshake'.
    hangup_after(screen, "127.0.0.12", 3.0)
    check(len(silent_dns.queries_for("slow.test")) >= 1, "the silent DNS server was never asked")

    # Twenty at once.
    clients = []
    for i in range(20):
        cl = harness.SmtpClient(plain.port, source=f"127.0.9.{i + 1}", timeout=5)
        check(cl.read_line(timeout=2).startswith("220-"), "expected '220-'")
        clients.append(cl)
    time.sleep(0.5)
    cports = [cl.local_port for cl in clients]
    for cl in clients:
        cl.close()
    for i, cport in enumerate(cports):
        harness.check_one_disconnect(plain, f"127.0.9.{i + 1}", cport, outcome="hangup", settle=0)
    harness.log(f"hang-ups logged once each (ports {ports})")
    screen.stop()
    plain.stop()


harness.run(main)
