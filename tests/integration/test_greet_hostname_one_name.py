#!/usr/bin/env python3
"""greet.hostname is the one name smtpscreen gives itself: with greet.hostname =
mx.one-name.test and greet.banner = $hostname ESMTP,
  - a new client's banner ('220-' at once, '220 ' after greet.wait), the deep-test
    dialog's EHLO and HELO replies and its 221 all name mx.one-name.test;
  - a pregreet bot's enforce dialog answers its EHLO with that name too;
  - a client over limits.per_client_connections gets '421 4.7.0 mx.one-name.test Error:
    too many connections from <ip>';
  - the name is never the host's own (gethostname), which is what every reply said
    before greet.hostname existed, while the banner said whatever greet.banner held;
  - after a SIGHUP that sets greet.hostname = mx.renamed.test, a new client meets the
    new name in its banner and its EHLO reply."""
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

NAME = "mx.one-name.test"
RENAMED = "mx.renamed.test"


def check_named(reply, code, name, what):
    check(reply.code == code, f"{what}: expected {code}, got {reply.text!r}")
    first = reply.lines[0]
    check(re.match(rf"{code}[- ](\d\.\d\.\d )?{re.escape(name)}( |$)", first),
          f"{what}: the reply must name {name} (greet.hostname), got {reply.text!r}")


def deep_session(screen, source, name):
    """Banner, EHLO, HELO and QUIT of a first-time client in the deep-test dialog."""
    c = harness.SmtpClient(screen.port, source=source, timeout=10)
    first = c.read_line(timeout=5)
    check(first == f"220-{name} ESMTP", f"[{source}]: the banner's first line must be '220-{name} ESMTP', got {first!r}")
    rest = c.read_reply(timeout=10)
    check(rest.lines == [f"220 {name} ESMTP"],
          f"[{source}]: the banner's last line must be '220 {name} ESMTP', got {rest.text!r}")
    check_named(c.cmd("EHLO client.example.org"), 250, name, f"[{source}] EHLO")
    check_named(c.cmd("HELO client.example.org"), 250, name, f"[{source}] HELO")
    check_named(c.cmd("QUIT"), 221, name, f"[{source}] QUIT")
    c.close()


def main(env):
    host = socket.gethostname()
    check(host not in (NAME, RENAMED), f"this host is called {host}: the test cannot tell the names apart")
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={
        "greet.banner": "$hostname ESMTP",
        "greet.hostname": NAME,
        "deep.pipelining": "on",
        "limits.per_client_connections": "1",
    })

    deep_session(screen, "127.0.0.7", NAME)

    # A pregreet bot: the enforce dialog, then a second connection from the same address
    # over limits.per_client_connections while the first is still open.
    bot = harness.SmtpClient(screen.port, source="127.0.0.8", timeout=10)
    first = bot.read_line(timeout=5)
    check(first == f"220-{NAME} ESMTP", f"pregreet bot: banner's first line {first!r}")
    bot.send("EHLO bot.example\r\n")
    screen.wait_for_log(harness.re_pregreet("127.0.0.8"))
    rest = bot.read_reply(timeout=10)
    check(rest.lines == [f"220 {NAME} ESMTP"], f"pregreet bot: banner's last line {rest.text!r}")
    check_named(bot.cmd("EHLO bot.example"), 250, NAME, "pregreet bot: the enforce dialog's EHLO reply")
    second = harness.SmtpClient(screen.port, source="127.0.0.8", timeout=10)
    refused = second.read_reply(timeout=5)
    check(refused.text == f"421 4.7.0 {NAME} Error: too many connections from 127.0.0.8",
          f"over limits.per_client_connections: expected '421 4.7.0 {NAME} Error: too many connections from "
          f"127.0.0.8', got {refused.text!r}")
    second.check_closed(5, "the refused second connection")
    check_named(bot.cmd("QUIT"), 221, NAME, "pregreet bot: QUIT")
    bot.close()

    # A reload renames the proxy for new connections.
    screen.settings["greet.hostname"] = RENAMED
    screen.write_config()
    size = screen.log_size()
    screen.signal(1)
    screen.wait_for_log(r"SIGHUP: reloaded", since=size)
    deep_session(screen, "127.0.0.9", RENAMED)
    harness.log(f"banner, EHLO, HELO, 221 and 421 name {NAME}; after SIGHUP {RENAMED}")


harness.run(main)
