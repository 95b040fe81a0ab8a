#!/usr/bin/env python3
"""docs/design.md, "TLS", TLS before the backend (issue 20, tls.before_backend = on, the
default): a client handed off at once (an access.file permit, PASS OLD) is greeted and
answered by smtpscreen itself up to its handshake, and the backend (the private Postfix,
PROXY v2) is connected only at the client's first command that needs it.
  - STARTTLS, permitted client: smtpscreen's own greeting (220 screen.test) and EHLO
    reply (STARTTLS offered, no backend.test); after the handshake the client's EHLO is
    answered by the backend itself (250-backend.test, no STARTTLS); its message is
    delivered exactly once; Postfix counts one EHLO (the client's, in TLS), no STARTTLS
    and no RSET (the backend never saw the dialog from before TLS).
  - the same for a PASS OLD client (it passed the greet wait first);
  - plain text, permitted client: EHLO from smtpscreen, then MAIL, RCPT and DATA
    pipelined in one write: the EHLO is replayed to Postfix (its reply swallowed), the
    three commands relayed in order, 250 250 354, the message delivered once;
  - a client that does STARTTLS and QUITs right after the handshake gets smtpscreen's
    221, its session ends as `quit`, and Postfix never hears of it (no line of Postfix's
    log names its address), while a later client is delivered;
  - a backend that greets with a refusal (554, as an access map with
    smtpd_delay_reject = no): the client's EHLO inside TLS gets that refusal as its
    answer, the EHLO never reaches the backend, the session ends as backend-refused;
  - tls.before_backend = off: the old path, the backend's greeting at once.
Before the change, every permitted client saw `220 backend.test` first and Postfix
counted an RSET after each handshake and a connection from the quitting client."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

PERMITTED = "127.0.0.21/32"


def postfix_counts(pf, source, port):
    return pf.wait_for_log(rf"disconnect from unknown\[{re.escape(source)}\]:{port} (.*)").group(1)


def own_greeting_and_ehlo(c, tag):
    g = c.read_greeting(code=220)
    check(g.final.startswith("220 screen.test") and "backend.test" not in g.text,
          f"{tag}: expected smtpscreen's own greeting, got {g.text!r}")
    ehlo = c.expect("EHLO client.example.org", 250)
    check("backend.test" not in ehlo.text, f"{tag}: expected smtpscreen's own EHLO reply, got {ehlo.text!r}")
    # What the backend offers (learned at start), PIPELINING included: nothing is tested.
    check(harness.ehlo_offers(ehlo, "PIPELINING") and harness.ehlo_offers(ehlo, "8BITMIME"),
          f"{tag}: the backend's keywords are not offered: {ehlo.text!r}")
    check(harness.ehlo_offers(ehlo, "STARTTLS"), f"{tag}: STARTTLS not offered: {ehlo.text!r}")
    return ehlo


def starttls_delivers(screen, pf, ca, source, tag, pass_line):
    since = screen.log_size()
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    own_greeting_and_ehlo(c, tag)
    r = c.expect("STARTTLS", 220)
    check(r.text == "220 2.0.0 Ready to start TLS", f"{tag}: STARTTLS: {r.text!r}")
    harness.tls_wrap(c, ca.ca_file)
    e = c.expect("EHLO client.example.org", 250)
    check(e.lines[0] == "250-backend.test", f"{tag}: the EHLO reply in TLS must be the backend's: {e.text!r}")
    check(not harness.ehlo_offers(e, "STARTTLS"), f"{tag}: STARTTLS offered again inside TLS: {e.text!r}")
    marker = harness.unique_marker(tag)
    c.send_mail(marker, ehlo=False)
    c.check_closed(10, "after QUIT")
    c.close()
    screen.wait_for_log(pass_line(source, port), since=since)
    screen.wait_for_log(harness.re_tls_established(source, port), since=since)
    counts = delivered_once(screen, pf, source, port, marker, tag)
    check("rset=" not in counts and "starttls=" not in counts, f"{tag}: Postfix saw RSET or STARTTLS: {counts}")


def delivered_once(screen, pf, source, port, marker, tag):
    """One handoff, the message delivered once, and Postfix's counts for the session
    (returned): one EHLO, MAIL, RCPT, DATA and QUIT."""
    harness.check_one_disconnect(screen, source, port, "handoff")
    pf.wait_for_delivery(marker)
    check(len(pf.delivered(marker)) == 1, f"{tag}: delivered {len(pf.delivered(marker))} times")
    counts = postfix_counts(pf, source, port)
    harness.log(f"{tag}: Postfix counted {counts}")
    check(re.search(r"\behlo=1 mail=1 rcpt=1 data=1 quit=1\b", counts), f"{tag}: Postfix's counts: {counts}")
    return counts


def plain_pipelined_delivers(screen, pf, source, tag):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    own_greeting_and_ehlo(c, tag)
    c.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n")  # one write
    harness.check_codes([c.read_reply(), c.read_reply(), c.read_reply()], [250, 250, 354], f"{tag}: pipelined")
    marker = harness.unique_marker(tag)
    c.send(f"Subject: {marker}\r\nMessage-ID: <{marker}@example.org>\r\n\r\nbody\r\n.\r\n")
    c.expect(None, 250)
    c.expect("QUIT", 221)
    c.close()
    delivered_once(screen, pf, source, port, marker, tag)  # its EHLO: smtpscreen's replay of the client's


def quits_after_handshake(screen, pf, ca, source, tag):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    own_greeting_and_ehlo(c, tag)
    c.expect("STARTTLS", 220)
    harness.tls_wrap(c, ca.ca_file)
    r = c.expect("QUIT", 221)
    # Postfix says "221 2.0.0 Bye"; smtpscreen names itself (greet.hostname).
    check(r.text != "221 2.0.0 Bye" and r.text.endswith(" Bye"), f"{tag}: expected smtpscreen's own 221, got {r.text!r}")
    c.close()
    harness.check_one_disconnect(screen, source, port, "quit")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    access = os.path.join(env.dir, "access.cidr")
    with open(access, "w") as f:
        f.write(f"{PERMITTED} permit\n")
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(cert, **{"access.file": access}))
    # The backend's keywords, asked at start (the deep tests' probe, run for this dialog too).
    screen.wait_for_log(r"backend EHLO keywords \(from asking ")

    starttls_delivers(screen, pf, ca, "127.0.0.21", "permit-tls",
                      lambda ip, port: rf"ALLOWLISTED {harness.ip_port(ip, port)}")
    # A new client passes the greet wait once (handed off at once, no dialog), then is known.
    c = harness.SmtpClient(screen.port, source="127.0.0.22", timeout=15)
    c.read_greeting(code=220)
    c.expect("QUIT", 221)
    c.close()
    screen.wait_for_log(harness.re_pass_new("127.0.0.22"))
    starttls_delivers(screen, pf, ca, "127.0.0.22", "pass-old-tls", harness.re_pass_old)

    plain_pipelined_delivers(screen, pf, "127.0.0.21", "permit-plain")

    quits_after_handshake(screen, pf, ca, "127.0.0.21", "quit-after-tls")
    quits_after_handshake(screen, pf, ca, "127.0.0.22", "quit-after-tls-old")
    # Postfix has logged everything up to a later client's delivery; none of it is about
    # a connection for the quitting clients' ports.
    before = pf.log()
    starttls_delivers(screen, pf, ca, "127.0.0.21", "permit-tls-after",
                      lambda ip, port: rf"ALLOWLISTED {harness.ip_port(ip, port)}")
    connects = len(re.findall(r"connect from unknown\[127\.0\.0\.2[12]\]", pf.log()))
    # Four sessions went to Postfix (three in TLS, one in plain text), plus the first,
    # greet-wait session of 127.0.0.22: five connects and five disconnects.
    check(connects == 10, f"Postfix saw {connects} connect/disconnect lines for the test clients, "
                          f"expected 10 (none for the two that quit after their handshake):\n"
                          f"{harness.tail(pf.log(), 40)}")
    check(before in pf.log(), "Postfix's log was rotated under the test")
    screen.check_no_log(r"AddressSanitizer|runtime error")
    screen.stop()

    # A backend that refuses the client at its greeting: the refusal answers the command
    # that asked for the backend, which is not sent.
    backend = harness.scripted_backend(env, greeting="554 5.7.1 Client host rejected: Access denied")
    refusing = env.smtpscreen(name="smtpscreen-refused", dns=dns, settings=harness.tls_settings(
        cert, **{"access.file": access, "backend.address": f"127.0.0.1:{backend.port}"}))
    c = harness.SmtpClient(refusing.port, source="127.0.0.21", timeout=15)
    port = c.local_port
    c.read_greeting(code=220)
    c.expect("EHLO client.example.org", 250)
    c.expect("STARTTLS", 220)
    harness.tls_wrap(c, ca.ca_file)
    r = c.cmd("EHLO client.example.org")
    check(r.text == "554 5.7.1 Client host rejected: Access denied",
          f"the backend's refusal must answer the EHLO in TLS, got {r.text!r}")
    c.expect("QUIT", 221)
    c.close()
    refusing.wait_for_log(rf"NOQUEUE: reject: CONNECT from {harness.ip_port('127.0.0.21', port)}: 554 5\.7\.1")
    harness.check_one_disconnect(refusing, "127.0.0.21", port, "backend-refused")
    # The other connection is smtpscreen's probe of the backend's EHLO keywords.
    mine = [rec for rec in backend.connections if rec["proxy"] and rec["proxy"][0] == "127.0.0.21"]
    check(len(mine) == 1, f"expected 1 backend connection for the client, saw {len(mine)}")
    got = mine[0]["data"]
    check(b"EHLO" not in got and b"QUIT" in got, f"the backend must get the QUIT and not the refused EHLO: {got!r}")
    refusing.stop()

    # tls.before_backend = off: the backend greets at once, as before.
    off = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-off",
                         settings=harness.tls_settings(cert, **{"access.file": access, "tls.before_backend": "off"}))
    c = harness.SmtpClient(off.port, source="127.0.0.21", timeout=15)
    g = c.read_greeting(code=220)
    check(g.final.startswith("220 backend.test"), f"tls.before_backend = off: expected the backend's greeting, got {g.text!r}")
    c.expect("QUIT", 221)
    c.close()
    off.stop()


harness.run(main)
