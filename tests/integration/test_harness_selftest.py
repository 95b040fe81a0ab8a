#!/usr/bin/env python3
"""Proves the test rig without smtpscreen: the private Postfix delivers to its Maildir
through each of its ports (plain, XCLIENT from the trusted address, PROXY v2 with a
hand-made header) and logs the address it was told; the XCLIENT port refuses XCLIENT
from an untrusted address; rbldnsd answers the test zones. When this fails, every other
integration test's failure is the rig's, not smtpscreen's."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_search  # noqa: E402


def main(env):
    pf = env.postfix(xclient_hosts="127.0.0.25/32")
    dns = env.rbldnsd()

    # rbldnsd: listed, allowlisted, clean.
    check(dns.lookup("127.0.0.2", "bl.test") == (0, ["127.0.0.2"]), f"bl.test 127.0.0.2: {dns.lookup('127.0.0.2', 'bl.test')}")
    check(dns.lookup("127.0.0.10", "bl.test") == (0, ["127.0.0.10"]), "bl.test 127.0.0.10")
    check(dns.lookup("127.0.0.20", "wl.test") == (0, ["127.0.0.3"]), "wl.test 127.0.0.20")
    rcode, answers = dns.lookup("127.0.0.7", "bl.test")
    check(rcode == 3 and answers == [], f"127.0.0.7 must be NXDOMAIN in bl.test, got {rcode} {answers}")

    # Plain port from 127.0.0.1 (mynetworks): delivered.
    marker = harness.unique_marker("plain")
    c = harness.SmtpClient(pf.plain_port, source="127.0.0.1")
    c.expect(None, 220, r"^220 backend\.test ESMTP")
    c.send_mail(marker)
    pf.wait_for_delivery(marker)

    # PROXY v2 port with a hand-made header naming 127.0.0.7:4242.
    marker = harness.unique_marker("proxy")
    c = harness.SmtpClient(pf.proxy_port, source="127.0.0.1")
    c.send(harness.proxy_v2_header("127.0.0.7", 4242, "127.0.0.1", 25))
    c.expect(None, 220)
    c.send_mail(marker)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.7", 4242))
    # ...and that client is outside mynetworks: no relaying.
    c = harness.SmtpClient(pf.proxy_port, source="127.0.0.1")
    c.send(harness.proxy_v2_header("127.0.0.7", 4243, "127.0.0.1", 25))
    c.expect(None, 220)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<victim@outside.test>", 554, r"Relay access denied")
    c.expect("QUIT", 221)

    # An IPv6 client address in the PROXY header (smtpscreen's [::1] listener hands those off).
    marker = harness.unique_marker("proxy6")
    c = harness.SmtpClient(pf.proxy_port, source="127.0.0.1")
    c.send(harness.proxy_v2_header("::1", 4245, "::1", 25))
    c.expect(None, 220)
    c.send_mail(marker)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("::1", 4245))

    # The scripted backend answers and records.
    fb = harness.scripted_backend(env)
    c = harness.SmtpClient(fb.port, source="127.0.0.25")
    c.expect(None, 220)
    c.send_mail("fake")
    fb.wait_connections(1)
    check(fb.connections[0]["peer"][0] == "127.0.0.25", f"fake backend peer {fb.connections[0]['peer']}")

    # XCLIENT port: from the trusted 127.0.0.25 it works (swaks --xclient) ...
    marker = harness.unique_marker("xclient")
    r = harness.swaks(pf.xclient_port, "127.0.0.25", marker,
                      extra=["--xclient", "ADDR=127.0.0.8 PORT=4244 NAME=[UNAVAILABLE]"])
    check(r.returncode == 0, f"swaks via XCLIENT failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.8", 4244))
    # ... from 127.0.0.1 it is refused.
    c = harness.SmtpClient(pf.xclient_port, source="127.0.0.1")
    c.expect(None, 220)
    ehlo = c.ehlo()
    check("XCLIENT" not in ehlo.text, f"XCLIENT offered to an untrusted client: {ehlo.text}")
    c.expect("XCLIENT ADDR=127.0.0.9 NAME=[UNAVAILABLE]", 550)
    c.expect("QUIT", 221)
    # XCLIENT with an IPv6 address from the trusted address.
    marker = harness.unique_marker("xclient6")
    c = harness.SmtpClient(pf.xclient_port, source="127.0.0.25")
    c.expect(None, 220)
    c.ehlo()
    c.expect("XCLIENT ADDR=IPV6:::1 PORT=4246 NAME=[UNAVAILABLE]", 220)
    c.send_mail(marker)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex("::1", 4246))

    # Bare LF is refused when this Postfix knows smtpd_forbid_bare_newline.
    check_search(r"smtpd_forbid_bare_newline|^", open(os.path.join(pf.config_dir, "main.cf")).read(), "main.cf")

    # Stopping leaves no master behind.
    pid = pf.master_pid
    pf.stop()
    check(not harness.pid_alive(pid), f"postfix master {pid} still running after stop")


harness.run(main)
