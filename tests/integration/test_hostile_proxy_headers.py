#!/usr/bin/env python3
"""PROXY headers where they do not belong, and bogus ones where they do (docs/design.md,
step 1 and "Hostile input"; issue 6). For each: the answer smtpscreen gives, exactly
one DISCONNECT line, and the backend never sees the header's claims.
On a listener without listen.proxy_protocol:
  1. a PROXY v1 line before the greeting: a pregreet violation (PREGREET logged with the
     line), enforce rejects RCPT with 550 5.5.1; with greet.action = drop: 521;
  2. a PROXY v2 header before the greeting: the same;
  3. a PROXY v1 line after the handoff: it never reaches the backend as PROXY (the relay
     blocks it; the client gets the backend's 502) and the backend keeps the real
     client address smtpscreen announced;
  4. a PROXY v1 line as a command during the deep tests: answered as an unknown command
     or as a non-SMTP command; never believed.
On a listener with listen.proxy_protocol = v2 (proxy_timeout 2s), each bogus header is
closed without a banner, logged ('PROXY header from ...: <why>; closing') and ends with
one DISCONNECT: a v1 line, a bad signature, version 3, an unknown command, an unknown
family, UDP, a length over the maximum, an address block too short for its family, a bad
CRC32C TLV, a TLS ClientHello, 100 KB of garbage, and a header cut short (closed after
proxy_timeout, not before)."""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

SIG = harness.PROXY_V2_SIGNATURE
TCP4 = bytes([127, 0, 0, 99, 127, 0, 0, 1]) + struct.pack("!HH", 4242, 25)


def v2(ver_cmd=0x21, fam=0x11, body=TCP4, length=None):
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body) if length is None else length) + body


def crc_tlv_header():
    # A PP2_TYPE_CRC32C TLV (0x03) whose value is not the checksum of the header.
    body = TCP4 + bytes([0x03]) + struct.pack("!H", 4) + b"\xde\xad\xbe\xef"
    return v2(body=body)


CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303") + bytes(32) + bytes.fromhex("000020c02bc02fc02cc030cca9cca8c013c014009c009d002f0035000a01000058")

BOGUS_V2 = [
    ("PROXY v1 line on a v2 listener", b"PROXY TCP4 127.0.0.99 127.0.0.1 4242 25\r\n"),
    ("bad signature", b"\r\n\r\n\x00\r\nQUIX\n" + bytes([0x21, 0x11, 0, 12]) + TCP4),
    ("version 3", v2(ver_cmd=0x31)),
    ("unknown command", v2(ver_cmd=0x2F)),
    ("unknown family", v2(fam=0x41)),
    ("UDP", v2(fam=0x12)),
    ("length over the maximum", v2(body=TCP4, length=0xFFFF) + bytes(2000)),
    ("address block too short", v2(body=TCP4[:4])),
    ("CRC32C mismatch", crc_tlv_header()),
    ("TLS ClientHello", CLIENT_HELLO),
    ("100 KB of garbage", bytes(range(256)) * 400),
]


def main(env):
    harness.bound_asan_quarantine()
    backend = harness.scripted_backend(env, "smtp")
    base = {"backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
            "cache.backend": "memory", "cache.path": None}
    plain = env.smtpscreen(name="plain", settings=dict(base, **{"greet.action": "enforce"}))
    drop = env.smtpscreen(name="drop", settings=dict(base, **{"greet.action": "drop"}))
    deep = env.smtpscreen(name="deep", settings=harness.deep_settings(dict(base)))
    v2l = env.smtpscreen(name="v2", settings=dict(base, **{
        "listen.proxy_protocol": "v2", "listen.proxy_timeout": "2s"}))
    answers = {}
    rss0 = {s.name: harness.rss_mib(s.pid) for s in (plain, drop, deep, v2l)}

    # 1-2. Before the greeting on a plain listener.
    for n, (what, header) in enumerate((("PROXY v1", harness.proxy_v1_header("127.0.0.99", 4242, "127.0.0.1", 25)),
                                        ("PROXY v2", harness.proxy_v2_header("127.0.0.99", 4242, "127.0.0.1", 25)))):
        src = f"127.0.16.{n + 1}"
        c = harness.SmtpClient(plain.port, source=src, timeout=10)
        port = c.local_port
        c.send(header)
        reply = c.read_reply(timeout=5)
        check(reply.code == 220, f"{what} on a plain listener: expected the final 220 (enforce), got {reply.text!r}")
        m = plain.wait_for_log(rf"PREGREET \d+ after \S+ from {harness.ip_port(src, port)}: (.*)")
        c.drain(0.3, 1)
        c.expect("EHLO client.example.org", 250)
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<b@example.test>", 550, r"^550 5\.5\.1 Protocol error")
        c.expect("QUIT", 221)
        harness.check_one_disconnect(plain, src, port, outcome="rejected")
        plain.check_no_log(r"\[127\.0\.0\.99\]")
        d = harness.SmtpClient(drop.port, source=src, timeout=10)
        dport = d.local_port
        d.send(header)
        r = d.read_reply(timeout=5)
        check(r.code == 521 and "5.5.1" in r.final, f"{what}, greet.action = drop: expected 521 5.5.1, got {r.text!r}")
        d.check_closed(3)
        harness.check_one_disconnect(drop, src, dport, outcome="dropped")
        answers[f"{what} before the greeting, plain listener"] = \
            f"PREGREET {m.group(1)[:40]!r}; enforce: 220 then RCPT 550 5.5.1; drop: {r.final!r}"
    check(not any(r["proxy"] and r["proxy"][0] == "127.0.0.99" for r in backend.connections),
          "the backend was told a PROXY header's address")

    # 3. After the handoff.
    c = harness.SmtpClient(plain.port, source="127.0.16.3", timeout=10)
    port = c.local_port
    c.read_greeting()
    r = c.cmd("PROXY TCP4 127.0.0.99 127.0.0.1 4242 25")
    check(r.code >= 500, f"PROXY line after the handoff: expected an error, got {r.text!r}")
    c.expect("QUIT", 221)
    harness.check_one_disconnect(plain, "127.0.16.3", port, outcome="handoff")
    rec = next(x for x in backend.connections if x["proxy"] and x["proxy"][1] == port)
    check(rec["proxy"][0] == "127.0.16.3", f"the backend was told {rec['proxy']}")
    check(b"PROXY TCP4" not in rec["data"], f"the client's PROXY line reached the backend: {rec['data']!r}")
    answers["PROXY v1 line after the handoff"] = f"{r.final!r} (relay rewrote it; the backend kept [127.0.16.3])"

    # 4. During the deep tests.
    c = harness.deep_client(deep, "127.0.16.4")
    port = c.local_port
    r = c.cmd("PROXY TCP4 127.0.0.99 127.0.0.1 4242 25")
    check(r.code >= 500, f"PROXY line during the deep tests: expected an error, got {r.text!r}")
    c.send("QUIT\r\n")
    c.check_closed(5)
    harness.check_one_disconnect(deep, "127.0.16.4", port)
    deep.check_no_log(r"\[127\.0\.0\.99\]")
    answers["PROXY v1 line during the deep tests"] = r.final

    # On a v2 listener: bogus headers.
    for what, data in BOGUS_V2:
        c = harness.SmtpClient(v2l.port, source="127.0.0.1", timeout=10)
        port = c.local_port
        started = time.monotonic()
        try:
            c.send(data)
        except OSError:
            pass
        closed = c.wait_closed(3)
        t = time.monotonic() - started
        check(closed, f"v2 listener, {what}: not closed within 3s")
        check(b"220" not in c.buf, f"v2 listener, {what}: a banner before a valid header: {c.buf!r}")
        m = v2l.wait_for_log(rf"PROXY header from {harness.ip_port('127.0.0.1', port)}: (.*); closing")
        outcome, _ = harness.check_one_disconnect(v2l, "127.0.0.1", port)
        answers[f"v2 listener: {what}"] = f"closed after {t:.2f}s, logged {m.group(1)!r}, outcome {outcome}"
    # Cut short: only proxy_timeout closes it.
    c = harness.SmtpClient(v2l.port, source="127.0.0.1", timeout=10)
    port = c.local_port
    started = time.monotonic()
    c.send(v2()[:20])
    closed = c.wait_closed(5)
    t = time.monotonic() - started
    check(closed and 1.8 <= t <= 3.0, f"v2 listener, header cut short: closed={closed} after {t:.2f}s (proxy_timeout 2s)")
    check(b"220" not in c.buf, f"v2 listener, header cut short: a banner: {c.buf!r}")
    m = v2l.wait_for_log(rf"PROXY header from {harness.ip_port('127.0.0.1', port)}: (.*); closing")
    outcome, _ = harness.check_one_disconnect(v2l, "127.0.0.1", port, outcome="timeout")
    answers["v2 listener: header cut short"] = f"closed after {t:.2f}s, logged {m.group(1)!r}, outcome {outcome}"
    # A valid header still works afterwards.
    c = harness.SmtpClient(v2l.port, source="127.0.0.1", timeout=10)
    c.send(harness.proxy_v2_header("127.0.16.5", 4343, "127.0.0.1", 25))
    reply = c.read_greeting()
    check(reply.code == 220 and "scripted.test" in reply.final, f"a valid header afterwards: {reply.text!r}")
    c.expect("QUIT", 221)
    harness.check_one_disconnect(v2l, "127.0.16.5", 4343, outcome="handoff")

    for k, v in answers.items():
        harness.log(f"{k}: {v}")
    for s in (plain, drop, deep, v2l):
        check(s.running(), f"{s.name} died")
        growth = harness.rss_mib(s.pid) - rss0[s.name]
        check(growth < 30, f"{s.name}: RSS grew by {growth:.1f} MiB")
        s.stop()


harness.run(main)
