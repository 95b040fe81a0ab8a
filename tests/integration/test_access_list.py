#!/usr/bin/env python3
"""access.file (docs/design.md, step 2): the first matching CIDR line wins, IPv4 and IPv6.
  - permit: handed off at once, no greet wait, even when DNSBL-listed (127.0.0.30 is in
    bl.test); logs ALLOWLISTED; the mail arrives and Postfix logs the real address;
  - reject with access.action = drop: '521 5.3.2 Service currently unavailable' at once,
    close, DENYLISTED;
  - reject with access.action = enforce: every RCPT gets '550 5.3.2 Service currently
    unavailable' and NOQUEUE is logged;
  - an address that matches no line is screened as usual (greet wait, PASS NEW)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GREET_WAIT = 2.0

ACCESS = """\
# first match wins
127.0.0.30 permit
127.0.0.32 permit
127.0.0.32/31 reject
127.0.0.31/32 reject
::1/128 reject
"""


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    access = os.path.join(env.dir, "access.cidr")
    with open(access, "w") as f:
        f.write(ACCESS)
    ipv6 = harness.have_ipv6_loopback()
    port6 = harness.free_port("::1") if ipv6 else None
    dropper = env.smtpscreen(postfix=pf, dns=dns, name="drop", settings={
        "listen.address": f"127.0.0.1:{harness.free_port()}" + (f", [::1]:{port6}" if ipv6 else ""),
        "greet.wait": f"{int(GREET_WAIT)}s", "access.file": access, "access.action": "drop"})
    dropper.port = dropper.listen_endpoints()[0][1]
    enforcer = env.smtpscreen(postfix=pf, dns=dns, name="enforce", settings={
        "greet.wait": f"{int(GREET_WAIT)}s", "access.file": access, "access.action": "enforce"})

    # permit beats the DNSBL listing; first match wins for .32
    for ip in ("127.0.0.30", "127.0.0.32"):
        harness.clean_session(dropper, pf, source=ip, expect="permit", tag="permit")

    # reject + drop, v4 and v6
    denied = [("127.0.0.33", "127.0.0.1", dropper.port), ("127.0.0.31", "127.0.0.1", dropper.port)]
    if ipv6:
        denied.append(("::1", "::1", port6))
    for ip, host, port in denied:
        c = harness.SmtpClient(port, host=host, source=ip)
        cport = c.local_port
        reply = c.read_reply(timeout=5)
        check(reply.code == 521 and reply.final.startswith("521 5.3.2 Service currently unavailable"),
              f"{ip}: expected '521 5.3.2 Service currently unavailable', got {reply.text!r}")
        check(c.elapsed() < 1.0, f"{ip}: the denylisted client was kept {c.elapsed():.2f}s")
        c.check_closed(3, f"{ip}: after 521")
        dropper.wait_for_log(harness.re_connect(ip, cport))
        dropper.wait_for_log(rf"DENYLISTED {harness.ip_port(ip, cport)}")
        dropper.wait_for_log(harness.re_disconnect(ip, cport))

    # reject + enforce
    c = harness.SmtpClient(enforcer.port, source="127.0.0.31")
    cport = c.local_port
    greeting = c.read_reply(timeout=GREET_WAIT + 5)
    check(greeting.code == 220 and "backend.test" not in greeting.text,
          f"enforce: a denylisted client must get smtpscreen's own 220, got {greeting.text!r}")
    c.expect("EHLO bot.example", 250)
    c.expect("MAIL FROM:<bot@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, r"^550 5\.3\.2 Service currently unavailable")
    c.expect("QUIT", 221)
    enforcer.wait_for_log(rf"DENYLISTED {harness.ip_port('127.0.0.31', cport)}")
    enforcer.wait_for_log(harness.re_noqueue("127.0.0.31", r"550 5\.3\.2 Service currently unavailable", cport))

    # no match: screened as usual
    harness.clean_session(enforcer, pf, source="127.0.0.7", expect="new", tag="nomatch")

    for ip in ("127.0.0.31", "127.0.0.33", "::1"):
        check(f"[{ip}]" not in pf.log(), f"Postfix saw denylisted client {ip}")
    dropper.stop()
    enforcer.stop()


harness.run(main)
