#!/usr/bin/env python3
"""A half-close in the relay is passed on, never taken for a close (issue 22, docs/design.md
"Half-close"). Exim writes its last ".", a pipelined QUIT, then shutdown(SHUT_WR), and
only then reads the replies; smtpscreen used to end the session at that FIN, so the
backend's 250 and 221 never came and Exim delivered the message again.
  - A PASS OLD client in front of the real Postfix sends "." and QUIT in one write, then
    half-closes: it gets Postfix's 250 and 221, then the EOF; the message is queued once.
  - The same over a TLS backend leg (backend.tls = on): smtpscreen sends Postfix a
    close_notify and then its FIN after the QUIT; Postfix's close_notify is its EOF.
  - A backend that half-closes after its 221 (scripted): the client reads the 221, then
    the EOF; one DISCONNECT ... handoff.
  - Both half-close: the client after ".\\r\\nQUIT\\r\\n", the scripted backend after its 221;
    the client reads 250 and 221, the backend reads the QUIT and then the EOF.
  - A backend that half-closes in mid-dialogue: the client reads its replies and the
    EOF, and a command it sends afterwards still reaches the backend.
  - A client that pipelines 400 NOOPs, half-closes and is gone before any reply (a slow
    backend answers one every 25 ms): smtpscreen's writes to it fail, and that failure
    ends the session at once, not when the backend has answered everything (10 s later):
    the relay reads neither side of a client that half-closed, so the failed write is
    the only news of it."""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.0.7"


def dot_quit_half_close(c, marker):
    """What Exim does: EHLO, MAIL, RCPT, DATA, then the message, its end of data and a
    pipelined QUIT in one write, then shutdown(SHUT_WR); returns every reply up to the
    server's EOF, which must be 250 and 221."""
    harness.open_data(c)
    replies = c.send_then_half_close(harness.message_text(marker) + ".\r\nQUIT\r\n", timeout=15)
    harness.check_codes(replies, [250, 221], "after '.' + QUIT + half-close (then the EOF)")
    return replies


def in_front_of(env, backend, name):
    """A smtpscreen relaying to a scripted backend, with no cache to remember anyone."""
    return env.smtpscreen(name=name, settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "1s",
        "cache.backend": "memory", "cache.path": None})


def greeted(screen, source):
    """(client from source that has read the whole greeting, its port)."""
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    c.read_greeting()
    return c, c.local_port


def check_passed_on(c, what):
    """The backend's half-close (what) reached the client as an EOF, not a reset."""
    check(c.wait_closed(5), f"{what} was not passed on: {c.transcript_text()}")
    check(not c.reset, f"{what} reached the client as a reset")


def postfix_relay(env, pf):
    screen = env.smtpscreen(postfix=pf, name="postfix-relay", settings={"greet.wait": "1s"})
    harness.clean_session(screen, pf, source=CLIENT, expect="new", tag="first")

    marker = harness.unique_marker("halfclose-old")
    c = harness.SmtpClient(screen.port, source=CLIENT, timeout=15)
    port = c.local_port
    greeting = c.read_reply(timeout=5)
    check(greeting.final.startswith("220 backend.test"), f"PASS OLD greeting: {greeting.text!r}")
    replies = dot_quit_half_close(c, marker)
    check(re.search(r"queued as", replies[0].text), f"the 250 is not Postfix's: {replies[0].text!r}")
    check(not c.reset, "smtpscreen reset the connection instead of passing Postfix's close on")
    c.close()
    screen.wait_for_log(harness.re_pass_old(CLIENT, port))
    harness.check_one_disconnect(screen, CLIENT, port, "handoff")
    pf.wait_for_delivery(marker)
    time.sleep(1.0)
    check(len(pf.delivered(marker)) == 1, f"{marker} must arrive exactly once, got {len(pf.delivered(marker))}")
    harness.log(f"PASS OLD [{CLIENT}]:{port}: '.'+QUIT+SHUT_WR got {[r.code for r in replies]}")


def tls_backend_relay(env):
    ca = harness.make_test_ca(env)
    cert = ca.issue("backend.test")
    pf = harness.tls_postfix(env, cert, name="tlspostfix")
    screen = env.smtpscreen(postfix=pf, name="tls-relay", settings={
        "greet.wait": "1s", "backend.tls": "on", "backend.tls_ca": ca.ca_file})
    marker = harness.unique_marker("halfclose-tls")
    c = harness.SmtpClient(screen.port, source="127.0.0.8", timeout=15)
    port = c.local_port
    greeting = c.read_greeting()
    check(greeting.code == 220, f"greeting over the TLS backend leg: {greeting.text!r}")
    replies = dot_quit_half_close(c, marker)
    c.close()
    screen.wait_for_log(r"TLS connection established to \[127\.0\.0\.1\]")
    harness.check_one_disconnect(screen, "127.0.0.8", port, "handoff")
    pf.wait_for_delivery(marker)
    harness.log(f"TLS backend leg [127.0.0.8]:{port}: '.'+QUIT+SHUT_WR got {[r.code for r in replies]}")


def scripted_relay(env):
    backend = harness.scripted_backend(env, "half-close-after-quit")
    screen = in_front_of(env, backend, "scripted-relay")

    # The backend half-closes after its 221; the client has not: it reads the 221, then
    # the EOF, and the backend reads the EOF passed on after the session.
    c, port = greeted(screen, "127.0.0.9")
    c.ehlo()
    c.expect("QUIT", 221)
    check_passed_on(c, "the backend's half-close after its 221")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.9", port, "handoff")
    check(backend.wait_closed(0)["eof"], "the backend's read ended in a reset, not in an EOF")

    # Both half-close: the client after "." and QUIT, the backend after its 221.
    c, port = greeted(screen, "127.0.0.9")
    dot_quit_half_close(c, "both-half-close")
    rec = backend.wait_closed(1)
    check(rec["eof"] and rec["data"].endswith(b".\r\nQUIT\r\n"),
          f"the backend must read '.', QUIT and then the EOF; it got ...{rec['data'][-40:]!r}")
    check(len(backend.messages()) == 1, f"the backend must accept one message, got {len(backend.messages())}")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.9", port, "handoff")

    # A backend that half-closes in mid-dialogue (after its replies to EHLO and NOOP): the
    # client reads them and the EOF; a half-close is not a close, so what the client
    # sends afterwards still reaches the backend, followed by the EOF.
    early = harness.scripted_backend(env, "smtp", half_close_after=2)
    screen2 = in_front_of(env, early, "scripted-early")
    c, port = greeted(screen2, "127.0.0.10")
    c.ehlo()
    c.expect("NOOP", 250)
    check_passed_on(c, "the backend's half-close")
    try:
        c.send("RSET\r\n")
    except OSError as e:
        harness.fail(f"the client could not send after the backend's half-close: {e}")
    rec = early.wait_closed(0)
    check(rec["eof"], "the backend's read ended in a reset, not in an EOF")
    check(rec["data"].endswith(b"NOOP\r\nRSET\r\n"),
          f"the client's RSET after the backend's half-close must reach the backend; it got "
          f"...{rec['data'][-40:]!r}")
    c.close()
    harness.check_one_disconnect(screen2, "127.0.0.10", port, "handoff")


def client_gone_after_half_close(env):
    slow = harness.scripted_backend(env, "smtp", reply_delay=0.025)
    screen = in_front_of(env, slow, "scripted-slow")
    c, port = greeted(screen, "127.0.0.11")
    c.send("NOOP\r\n" * 400)
    c.sock.shutdown(socket.SHUT_WR)
    c.close()   # gone: its kernel answers the replies to come with a reset
    started = time.monotonic()
    rec = slow.wait_connections(1) and slow.connections[0]
    harness.wait_until(lambda: rec["replies"] >= 3, 5, what="the slow backend's first replies")
    outcome, _ = harness.check_one_disconnect(screen, "127.0.0.11", port, "handoff", timeout=4)
    waited = time.monotonic() - started
    check(rec["replies"] < 200, f"the session ended only after the backend's {rec['replies']} replies "
                                f"({waited:.1f}s): the failed writes to the gone client were not noticed")
    return outcome


def main(env):
    pf = env.postfix()
    client_gone_after_half_close(env)
    postfix_relay(env, pf)
    scripted_relay(env)
    tls_backend_relay(env)


harness.run(main, timeout=150)
