#!/usr/bin/env python3
"""A client that sends its last commands and half-closes (shutdown(SHUT_WR)) gets the
replies to everything it sent, in smtpscreen's own dialogs too (issue 22, docs/design.md
"Half-close"), then the session closes:
  - enforce (a pregreet bot under greet.action = enforce): after the greeting it
    pipelines EHLO, MAIL, RCPT and QUIT and half-closes: 250, 250, 550, 221, EOF; the
    same without QUIT: 250, 250, 550, EOF; the session is "rejected";
  - deep tests, half-close before the handoff: MAIL then a half-close gets the 250, QUIT
    then a half-close gets the 221, and Postfix never sees the client;
  - deep tests, the end of data and QUIT pipelined after the handoff, then a half-close:
    Postfix's 250 and 221, the message arrives once;
  - deep tests (pipelining test off), a callout-style "MAIL, RCPT, QUIT" in one write and
    a half-close: the RCPT hands off while the client's EOF is already on its way; the
    replayed transaction's answers and the 221 still come back from Postfix."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def codes(replies):
    return [r.code for r in replies]


def half_close_after(c, data, want, what, timeout=10):
    """Sends data, half-closes, and checks the codes of every reply up to the EOF."""
    replies = c.send_then_half_close(data, timeout)
    harness.check_codes(replies, want, f"{what} then a half-close")
    return replies


def enforce(env):
    screen = env.smtpscreen(name="enforce", settings={
        "greet.action": "enforce", "greet.wait": "1s", "cache.backend": "memory", "cache.path": None})
    for source, commands, want in (
            ("127.0.0.9", "EHLO bot.example\r\nMAIL FROM:<bot@example.org>\r\nRCPT TO:<user@example.test>\r\n"
                          "QUIT\r\n", [250, 250, 550, 221]),
            ("127.0.0.10", "EHLO bot.example\r\nMAIL FROM:<bot@example.org>\r\nRCPT TO:<user@example.test>\r\n",
             [250, 250, 550])):
        c = harness.SmtpClient(screen.port, source=source, timeout=10)
        port = c.local_port
        first = c.read_line(timeout=3)
        check(first.startswith("220-"), f"enforce: first banner line {first!r}")
        c.send("EHLO bot.example\r\n")                    # before the greet wait ends
        screen.wait_for_log(harness.re_pregreet(source, port))
        greeting = c.read_reply(timeout=5)
        check(greeting.code == 220, f"enforce: greeting {greeting.text!r}")
        c.drain(0.5)                                     # whatever answers the early EHLO
        replies = half_close_after(c, commands, want, f"enforce, {commands!r}")
        check(replies[2].final.startswith("550 5.5.1 Protocol error"), f"enforce: RCPT reply {replies[2].text!r}")
        c.close()
        harness.check_one_disconnect(screen, source, port, "rejected")
        harness.log(f"enforce [{source}]:{port}: {codes(replies)} then EOF")


def deep(env, pf):
    screen = env.smtpscreen(postfix=pf, name="deep", settings=harness.deep_settings({"greet.wait": "1s"}))

    # Half-close before the handoff: the 250 to MAIL, then the close.
    c = harness.deep_client(screen, "127.0.0.7")
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    half_close_after(c, "MAIL FROM:<sender@example.org>\r\n", [250], "deep, MAIL")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.7", port)

    # QUIT then a half-close before the handoff: the 221.
    c = harness.deep_client(screen, "127.0.0.7")
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    c.expect("MAIL FROM:<sender@example.org>", 250)
    half_close_after(c, "QUIT\r\n", [221], "deep, QUIT")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.7", port)
    check("[127.0.0.7]" not in pf.log(), "Postfix saw a client that never sent a RCPT")

    # After the handoff: "." and QUIT in one write, then a half-close.
    marker = harness.unique_marker("deep-halfclose")
    c = harness.deep_client(screen, "127.0.0.8")
    port = c.local_port
    harness.open_data(c)
    half_close_after(c, harness.message_text(marker) + ".\r\nQUIT\r\n", [250, 221],
                     "deep handoff, '.' + QUIT", timeout=15)
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.8", port, "handoff")
    pf.wait_for_delivery(marker)
    check(len(pf.delivered(marker)) == 1, f"{marker} must arrive once")

    # A callout: MAIL, RCPT and QUIT in one write, then the half-close. Pipelining before
    # the RCPT reply is what deep.pipelining catches, so that test is off here.
    callout = env.smtpscreen(postfix=pf, name="deep-callout", settings={
        "greet.wait": "1s", "deep.non_smtp_command": "on", "deep.bare_newline": "on"})
    c = harness.deep_client(callout, "127.0.0.11")
    port = c.local_port
    c.expect("EHLO client.example.org", 250)
    replies = half_close_after(c, "MAIL FROM:<>\r\nRCPT TO:<user@example.test>\r\nQUIT\r\n", [250, 250, 221],
                               "deep, MAIL + RCPT (the handoff) + QUIT", timeout=15)
    c.close()
    harness.check_one_disconnect(callout, "127.0.0.11", port, "handoff")
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.11", port))
    harness.log(f"deep callout [127.0.0.11]:{port}: {codes(replies)} then EOF")


def main(env):
    enforce(env)
    deep(env, env.postfix())


harness.run(main, timeout=150)
