#!/usr/bin/env python3
"""A backend that greets a client with a refusal is refusing that client, not
unavailable (docs/design.md, step 8): its reply reaches the client as it is (a 5xx stays a
5xx, anvil's 421 stays anvil's 421), smtpscreen logs Postfix's
'NOQUEUE: reject: CONNECT from [ip]:port: <reply>', and the session ends as
'DISCONNECT ... backend-refused', never 'backend-unavailable' with a 421 4.3.2 of its own.

1. A real Postfix behind smtpscreen (PROXY v2) with anvil's limits:
   smtpd_client_connection_count_limit = 1: while a first session from 127.0.0.50 is
   open, a second one from the same address (PASS OLD: no "220-" line from smtpscreen)
   gets anvil's '421 4.7.0 backend.test Error: too many connections from 127.0.0.50' as
   its greeting, a well-formed reply, and then the close.
   smtpd_client_connection_rate_limit = 2: the third session within a minute from
   127.0.0.51 gets anvil's 421 as well.
2. A backend that greets '554-...' / '554 5.7.1 ...' (a fake one: Postfix greets 554 only
   through smtpd_delay_reject = no, see test_deep_backend_refuses_client): a new client
   has seen smtpscreen's '220-' line during the greet wait; after it comes the backend's
   554 reply as it is, so a client that reads the final line's code (this harness,
   Python's smtplib, Postfix, sendmail) sees 554 and does not retry."""
import os
import re
import smtplib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ANVIL_COUNT = "127.0.0.50"
ANVIL_RATE = "127.0.0.51"
FAKE_NEW = "127.0.0.60"
FAKE_SMTPLIB = "127.0.0.61"


def refused_logged(screen, ip, port, reply_regex):
    screen.wait_for_log(rf"NOQUEUE: reject: CONNECT from {harness.ip_port(ip, port)}: {reply_regex}")
    screen.wait_for_log(harness.re_disconnect(ip, port) + r" backend-refused after ")
    screen.check_no_log(harness.re_disconnect(ip, port) + r" backend-unavailable")


def anvil(env):
    pf = env.postfix(main_extra={
        "smtpd_client_connection_count_limit": "1",
        "smtpd_client_connection_rate_limit": "2",
        "anvil_rate_time_unit": "60s",
    })
    screen = env.smtpscreen(name="anvil", postfix=pf)

    first = harness.SmtpClient(screen.port, source=ANVIL_COUNT)
    greeting = first.read_reply()
    check(greeting.code == 220, f"first session from {ANVIL_COUNT}: expected 220, got {greeting.text!r}")
    first.ehlo()   # Postfix holds it: anvil counts it until it ends
    screen.wait_for_log(harness.re_pass_new(ANVIL_COUNT, first.local_port))

    second = harness.SmtpClient(screen.port, source=ANVIL_COUNT)
    port = second.local_port
    reply = second.read_reply()
    expected = rf"421 4\.7\.0 backend\.test Error: too many connections from {re.escape(ANVIL_COUNT)}"
    check(reply.code == 421 and len(reply.lines) == 1 and re.fullmatch(expected, reply.final),
          f"second concurrent session from {ANVIL_COUNT} (PASS OLD): expected anvil's own "
          f"'421 4.7.0 backend.test Error: too many connections from {ANVIL_COUNT}' as the whole "
          f"greeting, got {reply.text!r}")
    second.check_closed(5, "after anvil's 421")
    screen.wait_for_log(harness.re_pass_old(ANVIL_COUNT, port))
    refused_logged(screen, ANVIL_COUNT, port, expected + "$")
    pf.wait_for_log(r"warning: Connection concurrency limit exceeded: 2 from "
                    rf"unknown\[{re.escape(ANVIL_COUNT)}\]")
    first.expect("QUIT", 221)

    # Rate: two sessions a minute pass, the third gets anvil's 421.
    for n in (1, 2):
        c = harness.SmtpClient(screen.port, source=ANVIL_RATE)
        r = c.read_reply()
        check(r.code == 220, f"session {n} from {ANVIL_RATE}: expected 220, got {r.text!r}")
        c.expect("QUIT", 221)
        c.check_closed(5, f"session {n} from {ANVIL_RATE} after QUIT")
    third = harness.SmtpClient(screen.port, source=ANVIL_RATE)
    port = third.local_port
    reply = third.read_reply()
    expected = rf"421 4\.7\.0 backend\.test Error: too many connections from {re.escape(ANVIL_RATE)}"
    check(reply.code == 421 and re.fullmatch(expected, reply.final),
          f"third session a minute from {ANVIL_RATE}: expected anvil's 421, got {reply.text!r}")
    third.check_closed(5, "after anvil's rate 421")
    refused_logged(screen, ANVIL_RATE, port, expected + "$")
    pf.wait_for_log(r"warning: Connection rate limit exceeded: 3 from "
                    rf"unknown\[{re.escape(ANVIL_RATE)}\]")
    screen.stop()


def fake_554(env):
    backend = harness.scripted_backend(env,
        greeting="554-fake.test does not take mail from you\r\n554 5.7.1 Client host rejected: Access denied")
    screen = env.smtpscreen(name="fake554", settings={"backend.address": f"127.0.0.1:{backend.port}"})

    c = harness.SmtpClient(screen.port, source=FAKE_NEW)
    port = c.local_port
    reply = c.read_reply(timeout=10)
    check(reply.lines == ["220-screen.test ESMTP", "554-fake.test does not take mail from you",
                          "554 5.7.1 Client host rejected: Access denied"],
          f"a new client must see smtpscreen's '220-' line and then the backend's 554 reply "
          f"as it is, got {reply.text!r}")
    check(reply.code == 554, f"the reply's final code must be the backend's 554, got {reply.code}")
    screen.wait_for_log(harness.re_pass_new(FAKE_NEW, port))
    # The backend's dialogue goes on as the backend wants it: here its 221 to QUIT.
    c.expect("QUIT", 221)
    c.check_closed(5, "after QUIT")
    refused_logged(screen, FAKE_NEW, port,
                   r"554-fake\.test does not take mail from you 5\.7\.1 Client host rejected: Access denied$")

    # A real client library: smtplib takes the final line's code and gives up.
    try:
        smtplib.SMTP("127.0.0.1", screen.port, source_address=(FAKE_SMTPLIB, 0), timeout=15)
        harness.fail("smtplib connected although the backend refused the client with 554")
    except smtplib.SMTPConnectError as e:
        check(e.smtp_code == 554, f"smtplib must see the backend's 554, got {e.smtp_code} {e.smtp_error!r}")
    screen.wait_for_log(rf"NOQUEUE: reject: CONNECT from {harness.ip_port(FAKE_SMTPLIB)}: 554-")
    screen.wait_for_log(harness.re_disconnect(FAKE_SMTPLIB) + r" backend-refused after ")
    check(len(backend.connections) == 2, f"expected 2 backend connections, saw {len(backend.connections)}")
    screen.stop()


def main(env):
    anvil(env)
    fake_554(env)


harness.run(main)
