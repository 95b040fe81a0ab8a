#!/usr/bin/env python3
"""The README's Exim recipe, tested: a real Exim 4.96 (exim4-daemon-heavy, unpacked, its
own configuration) behind smtpscreen on a dedicated port with `hosts_proxy` learns each
client's real address from smtpscreen's PROXY header, v1 and v2.
  - Exim listens on 127.0.0.1:PORT with hosts_proxy = 127.0.0.25 (the recipe's line);
    smtpscreen connects from backend.source_address = 127.0.0.25, so only it is trusted
    and must send a PROXY header: a local client on 127.0.0.1 still gets Exim's 220.
  - One smtpscreen hands off with backend.handoff = proxy-v2, another with proxy-v1.
  - A clean client from 127.0.0.7 (through v2) and one from 127.0.0.8 (through v1) each
    deliver a message. Exim's log shows H=(client.example.org) [127.0.0.7] and [...8]
    with the proxy's address as PRX=127.0.0.25 (log_selector +proxy), and the
    delivered messages' Received: headers name [127.0.0.7] and [127.0.0.8], never
    127.0.0.25 or 127.0.0.1."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

# The recipe as the README shows it (main section of Exim's configuration); the
# harness's Exim logs with +proxy.
RECIPE = "hosts_proxy = 127.0.0.25"


def main(env):
    exim = harness.Exim(env, name="exim", main_extra=RECIPE)
    exim.start_daemon()
    seen = {}
    for handoff, source in (("proxy-v2", "127.0.0.7"), ("proxy-v1", "127.0.0.8")):
        screen = env.smtpscreen(name=f"screen-{handoff}", settings={
            "backend.address": f"127.0.0.1:{exim.port}", "backend.handoff": handoff,
            "backend.source_address": "127.0.0.25",
            "greet.wait": "300ms", "cache.backend": "memory", "cache.path": None})
        c = harness.SmtpClient(screen.port, source=source, timeout=20)
        greeting = c.read_reply(timeout=15)
        check(greeting.code == 220 and "exim.test" in greeting.text, f"{handoff}: Exim's greeting expected: {greeting}")
        marker = harness.unique_marker(handoff)
        c.send_mail(marker)
        c.close()
        seen[handoff] = (source, marker, c)

    for handoff, (source, marker, _) in seen.items():
        msgs = harness.wait_until(lambda: exim.delivered(marker), 20, what=f"{handoff} message in Exim's Maildir")
        text = msgs[0]
        received = re.search(r"^Received: from .*?(?=^\S)", text, re.M | re.S)
        check(received, f"{handoff}: no Received: header in\n{text[:800]}")
        harness.log(f"{handoff}: {' '.join(received.group(0).split())}")
        check(f"[{source}]" in received.group(0) and "127.0.0.25" not in received.group(0)
              and "127.0.0.1" not in received.group(0),
              f"{handoff}: Received: must name the client [{source}], not the proxy: {received.group(0)!r}")

    # Trust is for smtpscreen's source address only: a local program still talks plain SMTP.
    local = harness.SmtpClient(exim.port, source="127.0.0.1")
    check(local.read_reply(timeout=10).code == 220, "Exim must greet a local client that sends no PROXY header")
    local.expect("QUIT", 221)
    local.close()

    time.sleep(0.5)
    log = exim.log()
    for handoff, (source, marker, _) in seen.items():
        line = harness.check_search(rf"^.* <= sender@example\.org H=\(client\.example\.org\) \[{re.escape(source)}\]:\d+ "
                                    rf".*PRX=127\.0\.0\.25 .*$", log, f"Exim's mainlog for the {handoff} client")
        harness.log(f"{handoff}: {line.group(0)}")


harness.run(main)
