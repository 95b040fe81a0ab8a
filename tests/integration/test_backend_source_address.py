#!/usr/bin/env python3
"""backend.source_address (smtpscreen.ini(5)): smtpscreen connects to the backend from that
address, so the MTA can trust PROXY/XCLIENT from it alone.
  - Postfix trusts XCLIENT only from 127.0.0.25: with source_address = 127.0.0.25 a clean
    client is handed off (Postfix logs the connection from 127.0.0.25 and the message
    from the real client) and its mail arrives;
  - without it, Postfix refuses the proxy's XCLIENT and the client gets 421, never a
    session in which it looks like 127.0.0.1;
  - with proxy-v2 to a scripted backend: the backend sees the connection from
    127.0.0.25 and a header naming the client's address and port."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.25/32")
    dns = env.rbldnsd()
    trusted = env.smtpscreen(postfix=pf, dns=dns, name="trusted", settings={
        "backend.address": f"127.0.0.1:{pf.xclient_port}", "backend.handoff": "xclient",
        "backend.source_address": "127.0.0.25"})
    harness.clean_session(trusted, pf, source="127.0.0.7")
    pf.wait_for_log(r"connect from unknown\[127\.0\.0\.25\]")

    untrusted = env.smtpscreen(postfix=pf, dns=dns, name="untrusted", settings={
        "backend.address": f"127.0.0.1:{pf.xclient_port}", "backend.handoff": "xclient"})
    c = harness.SmtpClient(untrusted.port, source="127.0.0.8")
    port = c.local_port
    reply = c.read_reply(timeout=8)
    check(reply.final.startswith("421 4.3.2"),
          f"Postfix refused the proxy's XCLIENT (it connected from 127.0.0.1, not the trusted "
          f"127.0.0.25): the client must get '421 4.3.2 ...', got {reply.text!r}")
    c.check_closed(3, "after 421")
    untrusted.wait_for_log(harness.re_disconnect("127.0.0.8", port))
    check("[127.0.0.8]" not in pf.log(), "Postfix accepted the XCLIENT from an untrusted address")

    backend = harness.scripted_backend(env, "smtp")
    v2 = env.smtpscreen(dns=dns, name="proxy-v2", settings={
        "backend.address": f"127.0.0.1:{backend.port}", "backend.handoff": "proxy-v2",
        "backend.source_address": "127.0.0.25"})
    c = harness.SmtpClient(v2.port, source="127.0.0.9")
    port = c.local_port
    c.expect(None, 220, r"scripted\.test")
    c.expect("QUIT", 221)
    backend.wait_connections(1)
    conn = backend.connections[0]
    check(conn["peer"][0] == "127.0.0.25", f"the proxy connected to the backend from {conn['peer'][0]}, "
                                           f"expected backend.source_address 127.0.0.25")
    src, sport, dst, dport, _ = harness.parse_proxy_v2(conn["data"])
    check((src, sport) == ("127.0.0.9", port), f"PROXY v2 header names {src}:{sport}, expected 127.0.0.9:{port}")
    check((dst, dport) == ("127.0.0.1", v2.port), f"PROXY v2 header destination {dst}:{dport}, "
                                                  f"expected the listener 127.0.0.1:{v2.port}")
    for s in (trusted, untrusted, v2):
        s.stop()


harness.run(main)
