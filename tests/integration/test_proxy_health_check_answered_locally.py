#!/usr/bin/env python3
"""A load balancer's health check is answered by smtpscreen and never handed off.

Behind a listen.proxy_protocol listener, HAProxy's `check` with `send-proxy-v2` opens a
connection with a PROXY v2 LOCAL header (no addresses), and `send-proxy` sends the v1
line `PROXY UNKNOWN`. Neither names a client: the connection is the balancer's own.
smtpscreen must answer it itself:
  - `220 <banner>` at once (no greet wait), 250 to EHLO/HELO/NOOP/RSET, 502 to any
    other command, `221 2.0.0 <greet.hostname> Bye` to QUIT and then the close;
  - the backend never sees a connection (it once got the check as 127.0.0.1);
  - no client session is logged (no CONNECT, no DISCONNECT, no PASS NEW);
  - it takes no limits.max_connections slot: with max_connections = 1 and a health
    check held open, a real client is still handed off;
  - a check that says nothing is closed after listen.proxy_timeout."""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

# HAProxy's LOCAL header: version 2, command LOCAL (0x20), family UNSPEC, no addresses.
V2_LOCAL = harness.PROXY_V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"


def health_check(screen, header, what):
    c = harness.SmtpClient(screen.port, source="127.0.0.1")
    c.send(header)
    greeting = c.read_reply(timeout=3)
    check(greeting.code == 220 and len(greeting.lines) == 1,
          f"{what}: expected a one-line 220 at once, got {greeting.text!r}")
    check("screen.test" in greeting.text, f"{what}: the 220 is not smtpscreen's own banner: {greeting.text!r}")
    c.expect("EHLO haproxy.check", 250)
    c.expect("HELO haproxy.check", 250)
    c.expect("NOOP", 250)
    c.expect("RSET", 250)
    c.expect("MAIL FROM:<check@example.org>", 502)
    c.expect("XCLIENT ADDR=192.0.2.1", 502)
    c.expect("QUIT", 221, r"^221 2\.0\.0 \S+ Bye$")
    c.check_closed(3, f"{what} after QUIT")


def main(env):
    backend = harness.scripted_backend(env)
    screen = env.smtpscreen(name="lb", settings={
        "backend.address": f"127.0.0.1:{backend.port}",
        "listen.proxy_protocol": "auto",
        "listen.proxy_timeout": "1s",
        "limits.max_connections": "1",
        "limits.per_client_connections": "1",
    })

    health_check(screen, V2_LOCAL, "PROXY v2 LOCAL")
    health_check(screen, V1_UNKNOWN, "PROXY UNKNOWN (v1)")

    # Pipelined with its header, as a terse checker sends it.
    c = harness.SmtpClient(screen.port, source="127.0.0.1")
    c.send(V1_UNKNOWN + b"QUIT\r\n")
    c.expect(None, 220)
    c.expect(None, 221)
    c.check_closed(3, "UNKNOWN with a pipelined QUIT")

    # A check held open takes no connection slot: with max_connections = 1, a real
    # client behind the balancer still reaches the backend.
    held = harness.SmtpClient(screen.port, source="127.0.0.1")
    held.send(V2_LOCAL)
    held.expect(None, 220)
    real = harness.SmtpClient(screen.port, source="127.0.0.1")
    real.send(harness.proxy_v2_header("192.0.2.40", 4040, "127.0.0.1", 25))
    greeting = real.read_reply(timeout=8)
    check(greeting.code == 220 and "scripted.test" in greeting.text,
          f"a client behind a held-open health check was not handed off: {greeting.text!r}")
    real.expect("QUIT", 221)
    real.check_closed(3, "the real client after QUIT")
    screen.wait_for_log(harness.re_disconnect("192.0.2.40", 4040))

    # A silent check is closed after listen.proxy_timeout (1s), without a word.
    started = time.monotonic()
    held.check_closed(4, "a health check that says nothing")
    check(time.monotonic() - started < 3.5, "the silent health check was held past its timeout")

    check(len(backend.connections) == 1,
          f"the backend saw {len(backend.connections)} connection(s), expected only the real client's: "
          f"{[r['data'][:60] for r in backend.connections]}")
    log = screen.log_text()
    for regex in (harness.re_connect("127.0.0.1"), harness.re_disconnect("127.0.0.1"),
                  harness.re_pass_new("127.0.0.1"), r"ALLOWLISTED|PASS OLD"):
        screen.check_no_log(regex)
    check("too many connections" not in log, "a health check took a connection slot:\n" + log)
    screen.stop()


harness.run(main)
