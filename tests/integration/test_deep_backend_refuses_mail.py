#!/usr/bin/env python3
"""When the backend refuses a command smtpscreen replays at the handoff (docs/design.md, step 6:
a reply that differs goes to the client as it is), the client, which saw
smtpscreen's 250 to its EHLO and MAIL, gets the backend's refusal as the answer to its
RCPT, and the session stays consistent: the backend has no transaction, so DATA is
refused, and the client can start over (RSET/EHLO, MAIL, RCPT, DATA) and deliver.
Postfix runs with smtpd_delay_reject = no, so its restrictions answer the MAIL (and
EHLO) command itself:
  - MAIL FROM:<bad@example.org> (check_sender_access REJECT): RCPT gets
    '554 5.7.1 <bad@example.org>: Sender address rejected', through proxy-v2 and xclient;
  - MAIL FROM:<...> SIZE=999999999 (over message_size_limit): RCPT gets '552 5.3.4',
    which also proves the MAIL parameters are replayed;
  - MAIL FROM:<...> SMTPUTF8 from a client that sends it unoffered (this Postfix has
    smtputf8_enable = no, so smtpscreen's EHLO does not offer it either): RCPT gets
    '555 5.5.4 Unsupported option: SMTPUTF8';
  - EHLO bad.helo.test (check_helo_access REJECT): RCPT gets the EHLO refusal;
  - the replayed RCPT itself is refused (RCPT to an outside domain: '554 5.7.1 Relay
    access denied', through proxy-v2 and xclient): the client's next RCPT goes to the
    backend as is and delivers.
The refused transaction never queues a message; Postfix logs its refusal with the real
client address."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def start_over_and_deliver(c, pf, src, port, tag, rset=True, ehlo=False):
    """After the refusal: the session is consistent with the backend's state."""
    data = c.cmd("DATA")
    check(data.code == 503 or data.code == 554,
          f"{tag}: DATA after a refused transaction must be refused by the backend (503/554), got {data.text!r}")
    if rset:
        c.expect("RSET", 250)
    if ehlo:
        c.ehlo()
    marker = harness.unique_marker(f"{tag}-retry")
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")
    c.expect("DATA", 354)
    c.send(harness.message_text(marker) + ".\r\n")
    c.expect(None, 250, r"queued as")
    c.expect("QUIT", 221)
    c.check_closed(5, f"{tag}: after QUIT")
    text = pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(src, port))
    return text


def refused_at_rcpt(screen, src, helo, mail, reply_regex, tag):
    c = harness.deep_client(screen, src)
    port = c.local_port
    c.expect(f"EHLO {helo}", 250)
    c.expect(mail, 250)          # smtpscreen's own answer: it has not asked the backend yet
    rcpt = c.cmd("RCPT TO:<user@example.test>")
    check(rcpt.code >= 500 and re.search(reply_regex, rcpt.final),
          f"{tag}: the RCPT answer must be the backend's refusal of the replayed command "
          f"/{reply_regex}/, got {rcpt.text!r}")
    screen.wait_for_log(harness.re_connect(src, port))
    return c, port


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.1/32", main_extra={
        "smtpd_delay_reject": "no",
        "smtpd_sender_restrictions": "check_sender_access inline:{bad@example.org=REJECT}",
        "smtpd_helo_restrictions": "check_helo_access inline:{bad.helo.test=REJECT}",
    })
    dns = env.rbldnsd()
    v2 = env.smtpscreen(postfix=pf, dns=dns, name="proxy-v2", settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{pf.proxy_port}", "backend.handoff": "proxy-v2", "greet.wait": "1s"}))
    xc = env.smtpscreen(postfix=pf, dns=dns, name="xclient", settings=harness.deep_settings({
        "backend.address": f"127.0.0.1:{pf.xclient_port}", "backend.handoff": "xclient", "greet.wait": "1s"}))
    deliveries = 0

    # --- the sender is refused, through both handoffs
    for screen, src in ((v2, "127.0.0.62"), (xc, "127.0.0.63")):
        tag = f"sender-{screen.name}"
        c, port = refused_at_rcpt(screen, src, "client.example.org", "MAIL FROM:<bad@example.org>",
                                  r"^554 5\.7\.1 <bad@example\.org>: Sender address rejected", tag)
        pf.wait_for_log(rf"NOQUEUE: reject: MAIL from unknown\[{re.escape(src)}\]:{port}: 554 5\.7\.1 "
                        rf"<bad@example\.org>: Sender address rejected")
        start_over_and_deliver(c, pf, src, port, tag)
        deliveries += 1
        screen.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} handoff")

    # --- the MAIL parameters are replayed: SIZE over the backend's limit
    src = "127.0.0.64"
    c, port = refused_at_rcpt(v2, src, "client.example.org", "MAIL FROM:<sender@example.org> SIZE=999999999",
                              r"^552 5\.3\.4 ", "size")
    start_over_and_deliver(c, pf, src, port, "size")
    deliveries += 1

    # --- SMTPUTF8: sent unoffered, refused by this backend
    src = "127.0.0.65"
    c, port = refused_at_rcpt(v2, src, "client.example.org", "MAIL FROM:<sender@example.org> SMTPUTF8",
                              r"^555 5\.5\.4 Unsupported option: SMTPUTF8", "smtputf8")
    start_over_and_deliver(c, pf, src, port, "smtputf8")
    deliveries += 1

    # --- the replayed EHLO is refused; a new EHLO starts over
    src = "127.0.0.66"
    c, port = refused_at_rcpt(v2, src, "bad.helo.test", "MAIL FROM:<sender@example.org>",
                              r"^554 5\.7\.1 <bad\.helo\.test>: Helo command rejected", "helo")
    pf.wait_for_log(rf"NOQUEUE: reject: EHLO from unknown\[{re.escape(src)}\]:{port}: 554 5\.7\.1 "
                    rf"<bad\.helo\.test>: Helo command rejected")
    text = start_over_and_deliver(c, pf, src, port, "helo", rset=False, ehlo=True)
    harness.check_search(rf"Received: from client\.example\.org \(unknown \[{re.escape(src)}\]\)", text,
                         "the message after the new EHLO")
    deliveries += 1

    # --- the replayed RCPT itself is refused (no relaying through the deep path either);
    #     the client's next RCPT goes to the backend as is
    for screen, src in ((v2, "127.0.0.67"), (xc, "127.0.0.68")):
        tag = f"relay-{screen.name}"
        c = harness.deep_client(screen, src)
        port = c.local_port
        c.ehlo()
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<victim@outside.test>", 554, r"^554 5\.7\.1 <victim@outside\.test>: Relay access denied")
        pf.wait_for_log(rf"NOQUEUE: reject: RCPT from unknown\[{re.escape(src)}\]:{port}: 554 5\.7\.1 "
                        rf"<victim@outside\.test>: Relay access denied")
        marker = harness.unique_marker(tag)
        c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")
        c.expect("DATA", 354)
        c.send(harness.message_text(marker) + ".\r\n")
        c.expect(None, 250, r"queued as")
        c.expect("QUIT", 221)
        pf.wait_for_delivery(marker)
        deliveries += 1

    queued = harness.postfix_queued_ids(pf)
    check(len(queued) == deliveries,
          f"Postfix queued {len(queued)} message(s), expected {deliveries} (one per retry, none for a "
          f"refused transaction): {queued}")
    check(not pf.delivered("bad@example.org"), "a message from the refused sender arrived")
    v2.stop()
    xc.stop()


harness.run(main)
