#!/usr/bin/env python3
"""SIGTERM (smtpscreen(8), SIGNALS): smtpscreen stops accepting at once, lets the sessions in progress
finish for up to limits.shutdown_grace, then closes them and exits 0.
  - grace 10s, one handed-off session: after SIGTERM new connections are refused, the
    session carries on (its message arrives), and when it ends smtpscreen exits 0
    without waiting out the grace;
  - grace 1s, one idle handed-off session: smtpscreen closes it after about a second
    and exits 0, and the session still gets its DISCONNECT line;
  - SIGINT with no sessions: exit 0 at once."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def handed_off_client(screen, source):
    c = harness.SmtpClient(screen.port, source=source)
    c.expect(None, 220, r"backend\.test")
    c.ehlo()
    return c


def main(env):
    pf = env.postfix()

    # --- a session in progress finishes
    screen = env.smtpscreen(postfix=pf, name="grace10", settings={"limits.shutdown_grace": "10s"})
    c = handed_off_client(screen, "127.0.0.7")
    port = c.local_port
    screen.signal(signal.SIGTERM)
    harness.wait_until(lambda: harness.connect_refused(screen.port), 3,
                       what="smtpscreen to stop accepting after SIGTERM")
    check(screen.running(), "smtpscreen exited at SIGTERM although a session was in progress")
    marker = harness.unique_marker("grace")
    c.send_mail(marker, ehlo=False, quit=False)
    c.expect("QUIT", 221)
    ended = time.monotonic()
    try:
        rc = screen.proc.wait(8)
    except Exception:
        rc = None
    check(rc is not None, "smtpscreen did not exit after its last session ended (grace is 10s)")
    check(time.monotonic() - ended < 3, "smtpscreen waited out the grace instead of exiting when idle")
    check(rc == 0, f"exit status after SIGTERM: {rc}, expected 0")
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.7", port))
    screen.wait_for_log(harness.re_disconnect("127.0.0.7", port))

    # --- the grace runs out
    screen = env.smtpscreen(postfix=pf, name="grace1", settings={"limits.shutdown_grace": "1s"})
    c = handed_off_client(screen, "127.0.0.8")
    port = c.local_port
    started = time.monotonic()
    screen.signal(signal.SIGTERM)
    c.check_closed(6, "idle session after the 1s grace")
    rc = screen.stop(timeout=5)
    took = time.monotonic() - started
    check(0.8 <= took <= 5, f"smtpscreen took {took:.2f}s to exit with a 1s grace")
    screen.wait_for_log(harness.re_disconnect("127.0.0.8", port))

    # --- SIGINT, idle
    screen = env.smtpscreen(postfix=pf, name="sigint")
    started = time.monotonic()
    screen.signal(signal.SIGINT)
    try:
        rc = screen.proc.wait(5)
    except Exception:
        rc = None
    check(rc == 0, f"SIGINT with no sessions: exit status {rc}, expected 0 within 5s")
    check(time.monotonic() - started < 2, "SIGINT with no sessions took more than 2s")


harness.run(main)
