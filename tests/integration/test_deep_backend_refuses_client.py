#!/usr/bin/env python3
"""A backend that refuses the client itself at the replay is reported to the client as
is (docs/design.md, step 6: each replayed reply is compared with the
one the client saw, and a reply that differs goes to the client as it is; issue 5: 'If any replayed command gets a
different class of answer than the client already saw, the client gets the backend's
answer').

Postfix runs with smtpd_delay_reject = no and check_client_access REJECT for
127.0.0.69, so its greeting to that client (announced by the PROXY v2 header) is
'554 5.7.1 <unknown[127.0.0.69]:port>: Client host rejected: Access denied'. The
client passed smtpscreen's deep tests and saw smtpscreen's own 220; its RCPT must get
that permanent 554 -- not '421 4.3.2 Service temporarily unavailable', which would make
a refused sender's MTA retry for days instead of bouncing, and not a 250. No message
arrives. A control client from another address delivers through the same smtpscreen."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

REFUSED = "127.0.0.69"


def main(env):
    pf = env.postfix(main_extra={
        "smtpd_delay_reject": "no",
        "smtpd_client_restrictions": f"check_client_access inline:{{{REFUSED}=REJECT}}",
    })
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{pf.proxy_port}", "backend.handoff": "proxy-v2", "greet.wait": "1s"}))

    # What Postfix says to this client when asked directly (the PROXY port, as smtpscreen uses it).
    direct = harness.SmtpClient(pf.proxy_port, source="127.0.0.1")
    direct.send(harness.proxy_v2_header(REFUSED, 1234, "127.0.0.1", 25))
    greeting = direct.read_reply()
    check(greeting.code == 554 and "Client host rejected" in greeting.text,
          f"setup: Postfix must greet {REFUSED} with a 554 Client host rejected, got {greeting.text!r}")
    direct.close()

    control, c = harness.deep_clients(screen, ["127.0.0.70", REFUSED])
    marker = harness.unique_marker("refused-client")
    port = c.local_port
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    rcpt = c.cmd("RCPT TO:<user@example.test>")
    check(rcpt.code == 554 and re.search(r"^554 5\.7\.1 .*Client host rejected", rcpt.final),
          f"the RCPT of a client the backend refuses must get the backend's '554 5.7.1 ... Client host "
          f"rejected', got {rcpt.text!r}")
    pf.wait_for_log(rf"NOQUEUE: reject: CONNECT from unknown\[{re.escape(REFUSED)}\]:{port}: 554 5\.7\.1")
    if not c.wait_closed(0.5):
        data = c.cmd("DATA")
        check(data.code >= 500, f"DATA after the backend refused the client must fail, got {data.text!r}")
        c.send("QUIT\r\n")
        c.check_closed(5, "refused client after QUIT")
    screen.wait_for_log(harness.re_disconnect(REFUSED, port))
    screen.check_no_log(rf"DISCONNECT {harness.ip_port(REFUSED, port)} backend-unavailable")

    control.send_mail(marker)
    control.check_closed(5, "control client after QUIT")
    pf.wait_for_delivery(marker)
    check(len(harness.postfix_queued_ids(pf)) == 1, "only the control client's message may be queued")
    screen.stop()


harness.run(main)
