#!/usr/bin/env python3
"""smtpscreen does not turn Postfix into an open relay (docs/design.md, "Hostile input"): a client outside
mynetworks (127.0.0.7; mynetworks = 127.0.0.1/32) that passes screening and asks to
relay to an outside domain is refused by Postfix with '554 5.7.1 ... Relay access
denied', with each handoff mode (proxy-v2, proxy-v1, xclient), and Postfix's log names
the real client address, not the proxy's 127.0.0.1.
Control: the same RCPT sent to Postfix directly from 127.0.0.1 is accepted, so the
refusal above is Postfix seeing the real address, not a Postfix that relays for nobody."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.1/32")
    dns = env.rbldnsd()

    # Control: 127.0.0.1 is in mynetworks, so Postfix would relay for it.
    c = harness.SmtpClient(pf.plain_port, source="127.0.0.1")
    c.expect(None, 220)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<victim@outside.test>", 250)
    c.expect("RSET", 250)
    c.expect("QUIT", 221)

    modes = (("proxy-v2", pf.proxy_port), ("proxy-v1", pf.proxy_port), ("xclient", pf.xclient_port))
    screens = [env.smtpscreen(postfix=pf, dns=dns, name=f"screen-{mode}", settings={
        "backend.address": f"127.0.0.1:{port}", "backend.handoff": mode}) for mode, port in modes]
    for (mode, _), screen in zip(modes, screens):
        c = harness.SmtpClient(screen.port, source="127.0.0.7")
        port = c.local_port
        greeting = c.read_reply(timeout=10)
        check(greeting.code == 220 and "backend.test" in greeting.final,
              f"{mode}: expected the backend's 220, got {greeting.text!r}")
        c.ehlo()
        c.expect("MAIL FROM:<spammer@example.org>", 250)
        c.expect("RCPT TO:<victim@outside.test>", 554, r"Relay access denied")
        c.expect("RCPT TO:<victim@[192.0.2.1]>", 554, r"Relay access denied")
        data = c.cmd("DATA")
        check(data.code >= 500, f"{mode}: DATA with no accepted recipient: {data.text!r}")
        c.expect("QUIT", 221)
        pf.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.7\]:" + str(port) +
                        r": 554 5\.7\.1 <victim@outside\.test>: Relay access denied")
        screen.wait_for_log(harness.re_pass_new("127.0.0.7", port))
        screen.wait_for_log(harness.re_disconnect("127.0.0.7", port))
        harness.log(f"{mode}: relay from [127.0.0.7]:{port} refused by Postfix")

    check("status=sent" not in "\n".join(ln for ln in pf.log().splitlines() if "outside.test" in ln),
          "mail to outside.test was sent")
    for s in screens:
        s.stop()


harness.run(main)
