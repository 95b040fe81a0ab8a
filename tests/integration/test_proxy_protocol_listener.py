#!/usr/bin/env python3
"""listen.proxy_protocol (docs/design.md, step 1): behind a load balancer the PROXY header is
mandatory and its source address is the client.
  - v2: a header naming 192.0.2.7:4242 makes smtpscreen log CONNECT/PASS NEW for
    [192.0.2.7]:4242, hand that address to Postfix (which logs it) and deliver; a header
    naming a DNSBL-listed address gets that address rejected; a header sent in two
    pieces works, and nothing (no banner) is sent before it is complete;
  - malformed v2, a v1 line on a v2 listener, plain SMTP, or no header within
    listen.proxy_timeout: the connection is closed without a banner;
  - auto: v1 and v2 both accepted, the header still required;
  - listen.proxy_from: a header from an address outside it is refused (closed)."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def closed_without_banner(screen, data, what, source="127.0.0.1", within=4):
    c = harness.SmtpClient(screen.port, source=source)
    if data:
        c.send(data)
    closed = c.wait_closed(within)
    check(closed, f"{what}: the connection was not closed within {within}s; {c.transcript_text()}")
    check(b"220" not in c.buf, f"{what}: smtpscreen sent a banner before a valid header: {c.buf!r}")
    return c


def delivered_via_header(screen, pf, header, src, sport, tag):
    marker = harness.unique_marker(tag)
    c = harness.SmtpClient(screen.port, source="127.0.0.1")
    c.send(header)
    c.expect(None, 220, r"backend\.test")
    c.send_mail(marker)
    screen.wait_for_log(harness.re_connect(src, sport))
    screen.wait_for_log(harness.re_pass_new(src, sport))
    screen.wait_for_log(harness.re_disconnect(src, sport))
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(src, sport))


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    v2 = env.smtpscreen(postfix=pf, dns=dns, name="v2", settings={
        "listen.proxy_protocol": "v2", "listen.proxy_timeout": "1s"})

    # The header's address is the client.
    delivered_via_header(v2, pf, harness.proxy_v2_header("192.0.2.7", 4242, "127.0.0.1", 25),
                         "192.0.2.7", 4242, "v2")
    check(not re.search(r"(CONNECT from|PASS NEW) \[127\.0\.0\.1\]", v2.log_text()),
          "smtpscreen logged the load balancer's address instead of the header's")

    # DNSBL lookups use the header's address.
    c = harness.SmtpClient(v2.port, source="127.0.0.1")
    c.send(harness.proxy_v2_header("127.0.0.10", 4243, "127.0.0.1", 25))
    greeting = c.read_reply(timeout=8)
    check("backend.test" not in greeting.text, f"a listed address from the header was handed off: {greeting.text!r}")
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, re.escape("client [127.0.0.10] blocked using bl.test"))
    c.expect("QUIT", 221)
    v2.wait_for_log(harness.re_dnsbl_rank("127.0.0.10", 1, 4243))

    # A header in two pieces: no banner before it is complete.
    header = harness.proxy_v2_header("192.0.2.8", 4244, "127.0.0.1", 25)
    c = harness.SmtpClient(v2.port, source="127.0.0.1")
    c.send(header[:10])
    early = c.drain(0.4)
    check(early == b"", f"smtpscreen sent {early!r} before the PROXY header was complete")
    c.send(header[10:])
    c.expect(None, 220, r"backend\.test")
    c.expect("QUIT", 221)
    v2.wait_for_log(harness.re_pass_new("192.0.2.8", 4244))

    # Malformed or missing headers close the connection without a banner.
    bad_version = bytearray(harness.proxy_v2_header("192.0.2.9", 4245, "127.0.0.1", 25))
    bad_version[12] = 0x31
    closed_without_banner(v2, bytes(bad_version), "v2 header with version 3")
    bad_length = harness.PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + b"\x00\x02" + b"\x00\x00"
    closed_without_banner(v2, bad_length, "v2 TCP4 header too short for its addresses")
    closed_without_banner(v2, harness.PROXY_V2_SIGNATURE[:8] + b"garbage!" * 4, "broken v2 signature")
    closed_without_banner(v2, harness.proxy_v1_header("192.0.2.9", 4246, "127.0.0.1", 25), "v1 line on a v2 listener")
    closed_without_banner(v2, b"EHLO client.example.org\r\n", "plain SMTP on a v2 listener")
    started = time.monotonic()
    closed_without_banner(v2, b"", "no header (proxy_timeout 1s)", within=4)
    check(time.monotonic() - started >= 0.8, "closed before listen.proxy_timeout (1s) without any input")

    # auto: v1 and v2, header still required; proxy_from limits who may send one.
    auto = env.smtpscreen(postfix=pf, dns=dns, name="auto", settings={
        "listen.proxy_protocol": "auto", "listen.proxy_timeout": "1s",
        "listen.proxy_from": "127.0.0.1/32"})
    delivered_via_header(auto, pf, harness.proxy_v1_header("192.0.2.10", 4247, "127.0.0.1", 25),
                         "192.0.2.10", 4247, "auto-v1")
    delivered_via_header(auto, pf, harness.proxy_v2_header("192.0.2.11", 4248, "127.0.0.1", 25),
                         "192.0.2.11", 4248, "auto-v2")
    closed_without_banner(auto, b"EHLO client.example.org\r\n", "auto: no header")
    closed_without_banner(auto, harness.proxy_v1_header("192.0.2.12", 4249, "127.0.0.1", 25),
                          "auto: header from 127.0.0.9, outside listen.proxy_from", source="127.0.0.9")
    check("192.0.2.12" not in pf.log(), "a header from outside listen.proxy_from was believed")
    v2.stop()
    auto.stop()


harness.run(main)
