#!/usr/bin/env python3
"""Postfix's anvil(8) connection rate limit keeps working behind smtpscreen, by the
client's address (README, "Backend policies behind smtpscreen"; docs/design.md, step 8).

A real Postfix with smtpd_client_connection_rate_limit = 2 per anvil_rate_time_unit =
60s and smtpd_client_event_limit_exceptions empty (its default, $mynetworks, exempts
trusted clients; empty, nothing is exempt, smtpscreen's own 127.0.0.1 included). smtpscreen hands off with PROXY v2: two sessions a minute
from 127.0.0.55 get Postfix's 220, the third gets anvil's own
'421 4.7.0 backend.test Error: too many connections from 127.0.0.55' as its greeting,
relayed as it is (NOQUEUE: reject: CONNECT, outcome backend-refused), and Postfix logs
the rate for unknown[127.0.0.55]: anvil counted the client, not smtpscreen's 127.0.0.1,
which makes 3 connections too and is never refused.

With XCLIENT the same, though Postfix applies anvil elsewhere: it exempts the
XCLIENT-authorized host (smtpscreen) at connect and checks the announced client when
XCLIENT arrives, so anvil's 421 is Postfix's answer to XCLIENT. smtpscreen relays it as
it is too (before, it logged "backend unavailable ... backend refused XCLIENT" and gave
the client its own 421 4.3.2)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.0.55"
XCLIENT_CLIENT = "127.0.0.56"


def session_gets_220(screen, source, n):
    c = harness.SmtpClient(screen.port, source=source)
    r = c.read_reply(timeout=10)
    check(r.code == 220 and r.final.startswith("220 backend.test"),
          f"session {n} from {source}: expected Postfix's 220, got {r.text!r}")
    c.expect("QUIT", 221)
    c.check_closed(5, f"session {n} from {source} after QUIT")


def handoff(env, pf, method, port, client):
    screen = env.smtpscreen(name=f"anvil-{method}", postfix=pf,
                            settings={"backend.address": f"127.0.0.1:{port}", "backend.handoff": method})
    for n in (1, 2):
        session_gets_220(screen, client, n)
    third = harness.SmtpClient(screen.port, source=client)
    cport = third.local_port
    reply = third.read_reply(timeout=10)
    expected = rf"421 4\.7\.0 backend\.test Error: too many connections from {re.escape(client)}"
    check(reply.code == 421 and len(reply.lines) == 1 and re.fullmatch(expected, reply.final),
          f"third session a minute from {client} ({method}): expected anvil's "
          f"'421 4.7.0 backend.test Error: too many connections from {client}', got {reply.text!r}")
    third.check_closed(5, "after anvil's 421")
    screen.wait_for_log(rf"NOQUEUE: reject: CONNECT from {harness.ip_port(client, cport)}: {expected}$")
    screen.wait_for_log(harness.re_disconnect(client, cport) + r" backend-refused after ")
    screen.check_no_log(r"backend unavailable")
    # anvil counted the client's own address and port (smtpd_client_port_logging = yes),
    # never smtpscreen's 127.0.0.1, which connected as often.
    pf.wait_for_log(rf"warning: Connection rate limit exceeded: 3 from unknown\[{re.escape(client)}\]:{cport} "
                    rf"for service 127\.0\.0\.1:{port}")
    check(not re.search(r"Connection rate limit exceeded: \d+ from \S*\[127\.0\.0\.1\]", pf.log()),
          "anvil must count the client's address, not smtpscreen's 127.0.0.1")
    screen.stop()


def main(env):
    pf = env.postfix(main_extra={
        "smtpd_client_connection_rate_limit": "2",
        "anvil_rate_time_unit": "60s",
        "smtpd_client_event_limit_exceptions": "",
    })
    handoff(env, pf, "proxy-v2", pf.proxy_port, CLIENT)
    handoff(env, pf, "xclient", pf.xclient_port, XCLIENT_CLIENT)


harness.run(main, timeout=120)
