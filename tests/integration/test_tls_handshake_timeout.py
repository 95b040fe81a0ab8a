#!/usr/bin/env python3
"""docs/design.md, "TLS": a TLS handshake that stalls is closed after tls.handshake_timeout (2s here).
  - A client that says STARTTLS, gets the 220 and then sends nothing is closed after
    about 2s (not before 1.5s, before 5s); smtpscreen logs `TLS handshake timeout for
    [ip]:port (tls.handshake_timeout)` and DISCONNECT for it.
  - The same for a client that sends the first bytes of a ClientHello and stalls (a
    slow handshake is not an idle one that each byte restarts).
  - A client that waits 1s after the 220 and then does the handshake is not cut off,
    and delivers its message."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

TIMEOUT = 2.0

# The first 11 bytes of a TLS 1.2 ClientHello record: header (handshake, 3.1, length 512),
# then handshake type 1, length 508, version 3.3. The rest never comes.
PARTIAL_HELLO = bytes.fromhex("16030102000100 01fc0303".replace(" ", ""))


def stalled(screen, source, after_220, what):
    since = screen.log_size()
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    c.read_greeting(code=220)
    ehlo = c.expect("EHLO client.example.org", 250)
    check(harness.ehlo_offers(ehlo, "STARTTLS"), f"EHLO does not offer STARTTLS: {ehlo.text!r}")
    c.expect("STARTTLS", 220)
    t0 = time.monotonic()
    if after_220:
        c.send(after_220)
    closed = c.wait_closed(8)
    elapsed = time.monotonic() - t0
    check(closed, f"{what}: the connection is still open {elapsed:.1f}s after the 220 to STARTTLS "
                  f"(tls.handshake_timeout = {TIMEOUT:.0f}s)")
    check(elapsed >= TIMEOUT - 0.5, f"{what}: closed {elapsed:.2f}s after the 220, before tls.handshake_timeout")
    check(elapsed < 5.0, f"{what}: closed only {elapsed:.2f}s after the 220 (tls.handshake_timeout {TIMEOUT:.0f}s)")
    check(b"250" not in c.buf and b"220" not in c.buf,
          f"{what}: got SMTP in clear after the 220 to STARTTLS: {c.buf!r}")
    c.close()
    screen.wait_for_log(rf"TLS handshake timeout for \[{re.escape(source)}\]:{port}\b", since=since)
    screen.wait_for_log(harness.re_disconnect(source, port), since=since)
    screen.check_no_log(harness.re_tls_established(source, port), since=since)
    harness.log(f"{what}: [{source}]:{port} closed {elapsed:.2f}s after the 220")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(
        cert, **{"tls.handshake_timeout": f"{int(TIMEOUT)}s"}))

    stalled(screen, "127.0.0.7", b"", "silent after STARTTLS")
    stalled(screen, "127.0.0.7", PARTIAL_HELLO, "partial ClientHello")

    # A slow but live client is not cut off: 1s of silence, then the handshake.
    c = harness.SmtpClient(screen.port, source="127.0.0.8", timeout=15)
    c.read_greeting(code=220)
    c.expect("EHLO client.example.org", 250)
    c.expect("STARTTLS", 220)
    time.sleep(1.0)
    harness.tls_wrap(c, ca.ca_file)
    marker = harness.unique_marker("slow")
    time.sleep(TIMEOUT + 0.5)   # after the handshake the timeout no longer applies
    c.send_mail(marker)
    c.check_closed(10, "after QUIT")
    c.close()
    pf.wait_for_delivery(marker)
    screen.check_no_log(r"TLS handshake timeout for \[127\.0\.0\.8\]")
    screen.stop()


harness.run(main)
