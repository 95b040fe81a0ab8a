#!/usr/bin/env python3
"""TLS records sent to the plaintext port (a client that speaks implicit TLS, port-465
style, or a scanner) (issue 6). For each: the answer smtpscreen gives, exactly one
DISCONNECT line, smtpscreen's RSS stays bounded.
  1. a TLS ClientHello before the greeting: a pregreet violation (PREGREET logged with
     the bytes escaped); enforce: the final 220 comes anyway; drop: 521 5.5.1 and close;
  2. a real TLS client (Python ssl) that starts its handshake at once: its handshake
     fails (our banner is not TLS), it leaves, the session ends (PREGREET, then hangup
     or rejected);
  3. a ClientHello during the deep tests: one without an LF byte never finishes a line,
     so limits.command_time_limit (3s) ends it with '421 4.4.2'; one with an LF byte (as
     real ones often have) fails the non-SMTP command test;
  4. a ClientHello after the handoff: relayed to the backend like any bytes (the
     backend's problem); the session ends when the client leaves; 1 MB of TLS-looking
     records does not grow smtpscreen's memory."""
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303") + bytes(32) + bytes.fromhex(
    "000020c02bc02fc02cc030cca9cca8c013c014009c009d002f0035000a01000058")
# The ClientHello above holds an LF (cipher 0x000a), as real ones often do; this one none.
HELLO_NO_LF = bytes(b if b != 0x0A else 0x0B for b in CLIENT_HELLO)


def main(env):
    harness.bound_asan_quarantine()
    backend = harness.scripted_backend(env, "smtp")
    base = {"backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
            "cache.backend": "memory", "cache.path": None, "limits.command_time_limit": "3s",
            "backend.idle_timeout": "5s"}
    enforce = env.smtpscreen(name="enforce", settings=dict(base, **{"greet.action": "enforce"}))
    drop = env.smtpscreen(name="drop", settings=dict(base, **{"greet.action": "drop"}))
    deep = env.smtpscreen(name="deep", settings=harness.deep_settings(dict(base)))
    rss0 = {s.name: harness.rss_mib(s.pid) for s in (enforce, drop, deep)}
    answers = {}

    # 1. Before the greeting.
    c = harness.SmtpClient(enforce.port, source="127.0.17.1", timeout=10)
    port = c.local_port
    c.send(CLIENT_HELLO)
    reply = c.read_reply(timeout=5)
    check(reply.code == 220, f"ClientHello before the greeting (enforce): expected 220, got {reply.text!r}")
    m = enforce.wait_for_log(rf"PREGREET (\d+) after \S+ from {harness.ip_port('127.0.17.1', port)}: (.*)")
    check(m.group(2).startswith(r"\x16\x03\x01"), f"the PREGREET excerpt should show the record header: {m.group(2)!r}")
    c.expect("QUIT", 221)
    harness.check_one_disconnect(enforce, "127.0.17.1", port, outcome="rejected")
    d = harness.SmtpClient(drop.port, source="127.0.17.1", timeout=10)
    dport = d.local_port
    d.send(CLIENT_HELLO)
    r = d.read_reply(timeout=5)
    check(r.code == 521, f"ClientHello before the greeting (drop): expected 521, got {r.text!r}")
    d.check_closed(3)
    harness.check_one_disconnect(drop, "127.0.17.1", dport, outcome="dropped")
    answers["ClientHello before the greeting"] = f"PREGREET {m.group(1)} bytes; enforce: 220 (then 550 on RCPT); drop: {r.final!r}"

    # 2. A real TLS client.
    for name, screen in (("enforce", enforce), ("drop", drop)):
        raw = socket.create_connection(("127.0.0.1", screen.port), timeout=5, source_address=("127.0.17.2", 0))
        port = raw.getsockname()[1]
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.close()
            harness.fail(f"{name}: a TLS handshake succeeded on the plaintext port")
        except (ssl.SSLError, OSError) as e:
            err = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
        raw.close()
        outcome, _ = harness.check_one_disconnect(screen, "127.0.17.2", port, timeout=8)
        answers[f"Python ssl client, greet.action = {name}"] = f"client: {err}; outcome {outcome}"

    # 3. Deep tests: without a line end, the command time limit; with one, non-SMTP.
    c = harness.deep_client(deep, "127.0.17.3")
    port = c.local_port
    started = time.monotonic()
    c.send(HELLO_NO_LF)
    reply = c.read_reply(timeout=8)
    t = time.monotonic() - started
    check(reply.code == 421 and "4.4.2" in reply.final, f"deep, ClientHello without a line end: expected 421 4.4.2, got {reply.text!r}")
    check(2.8 <= t <= 4.0, f"deep, ClientHello: the 421 came after {t:.2f}s (command_time_limit 3s)")
    c.check_closed(3)
    harness.check_one_disconnect(deep, "127.0.17.3", port, outcome="timeout")
    answers["ClientHello (no LF byte) during the deep tests"] = f"{reply.final!r} after {t:.1f}s (command_time_limit)"
    c = harness.deep_client(deep, "127.0.17.4")
    port = c.local_port
    c.send(CLIENT_HELLO + b"\r\n")
    got = c.drain(quiet=0.5, limit=3).decode(errors="replace")
    check(got[:1] in ("5", "4"), f"deep, ClientHello with an LF byte: expected error replies, got {got!r}")
    deep.wait_for_log(rf"NON-SMTP COMMAND from {harness.ip_port('127.0.17.4', port)}")
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.test>", 550, r"^550 5\.5\.1")
    c.expect("QUIT", 221)
    harness.check_one_disconnect(deep, "127.0.17.4", port, outcome="rejected")
    answers["ClientHello (with an LF byte) during the deep tests"] = \
        f"{got.splitlines()!r}; NON-SMTP COMMAND logged; RCPT 550 5.5.1"

    # 4. After the handoff.
    c = harness.SmtpClient(enforce.port, source="127.0.17.5", timeout=10)
    port = c.local_port
    reply = c.read_greeting()
    check("scripted.test" in reply.final, f"expected the backend's 220, got {reply.text!r}")
    records = (CLIENT_HELLO + b"\x17\x03\x03\x40\x00" + bytes(range(256)) * 64) * 16
    sent, how = harness.pump_bytes(c.sock, len(records), pattern=records, chunk=len(records), stall=3)
    time.sleep(0.5)
    got = c.drain(quiet=0.5, limit=2)
    c.close()
    outcome, _ = harness.check_one_disconnect(enforce, "127.0.17.5", port, timeout=10)
    rec = next(x for x in backend.connections if x["proxy"] and x["proxy"][1] == port)
    answers["TLS records after the handoff"] = (f"{sent} bytes ({how}) relayed ({len(rec['data'])} reached the backend); "
                                                f"client got {got[:60]!r}; outcome {outcome}")

    for s in (enforce, drop, deep):
        check(s.running(), f"{s.name} died")
        growth = harness.rss_mib(s.pid) - rss0[s.name]
        check(growth < 30, f"{s.name}: RSS grew by {growth:.1f} MiB")
    for k, v in answers.items():
        harness.log(f"{k}: {v}")
    for s in (enforce, drop, deep):
        s.stop()


harness.run(main)
