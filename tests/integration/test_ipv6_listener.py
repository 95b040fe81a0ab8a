#!/usr/bin/env python3
"""smtpscreen listens on every listen.address, IPv6 included (smtpscreen.ini(5)): with
'[::1]:p6, 127.0.0.1:p4', a client on ::1 is logged as [::1]:port, handed off and its
mail arrives with Postfix logging ::1 and its port (PROXY v2 TCP6 and XCLIENT
ADDR=IPV6:...); the IPv4 listener of the same process works too."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def main(env):
    if not harness.have_ipv6_loopback():
        raise harness.Skip("this machine has no IPv6 loopback (::1)")
    pf = env.postfix(xclient_hosts="127.0.0.1/32")
    dns = env.rbldnsd()
    for handoff, backend_port in (("proxy-v2", pf.proxy_port), ("xclient", pf.xclient_port)):
        p6, p4 = harness.free_port("::1"), harness.free_port()
        screen = env.smtpscreen(postfix=pf, dns=dns, name=f"v6-{handoff}", settings={
            "listen.address": f"[::1]:{p6}, 127.0.0.1:{p4}",
            "backend.address": f"127.0.0.1:{backend_port}", "backend.handoff": handoff})
        s = harness.clean_session(screen, pf, source="::1", host="::1", port=p6, tag=f"v6-{handoff}")
        screen.wait_for_log(harness.re_connect("::1", s.port, to=("::1", p6)))
        harness.clean_session(screen, pf, source="127.0.0.7", host="127.0.0.1", port=p4, tag=f"v4-{handoff}")
        screen.stop()


harness.run(main)
