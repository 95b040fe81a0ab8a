#!/usr/bin/env python3
"""docs/design.md, "TLS"; issue 4: `backend.tls = on` makes smtpscreen itself do STARTTLS towards the
backend. The private Postfix's smtpd ports offer STARTTLS with a certificate of the test
CA (smtpd_tls_security_level = may, smtpd_tls_loglevel = 1, tlsmgr).
  - backend.tls = on, backend.tls_ca = the test CA: a plain client (first session, PASS
    NEW) delivers through smtpscreen; Postfix logs `Anonymous TLS connection established
    from unknown[client ip]:port: TLSv1.2 ...` with the real client address (the PROXY v2
    header came before the TLS), and the delivered message's Received header says
    `using TLSv1.2`; smtpscreen logs `Verified|Trusted TLS connection established to
    [127.0.0.1]:port`. The client's EHLO reply offers no STARTTLS of the backend's.
  - A client doing STARTTLS with smtpscreen (swaks --tls) while smtpscreen does STARTTLS
    with Postfix: encrypted on both legs, delivered, both logs say so.
  - backend.tls_ca empty (unverified, Postfix's "may"): still encrypted and delivered.
  - backend.tls_ca = an unrelated CA: the certificate does not verify, the handoff
    fails, the client gets 421 (not the backend's 220) and the message never arrives;
    smtpscreen logs the failure.
  - A backend that does not offer STARTTLS (backend.tls = on): 421, logged, nothing of
    the client's reaches it in clear.
  - The backend leg's twin of CVE-2011-0411: a scripted TLS backend answers smtpscreen's
    STARTTLS with `220 ...\r\n250 2.0.0 INJECTED\r\n` in one packet, then does the
    handshake. The injected line never reaches the client (its EHLO gets the backend's
    EHLO reply made inside TLS, NOOP gets 250, QUIT 221), and smtpscreen logs the
    discarded bytes."""
import os
import re
import ssl
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def postfix_saw_tls(pf, source, port):
    return pf.wait_for_log(rf"TLS connection established from unknown\[{re.escape(source)}\]:{port}: "
                           rf"TLSv1\.2 with cipher (\S+)")


INJECTION = b"250 2.0.0 INJECTED\r\n"


class InjectingTlsBackend:
    """One-connection SMTP server: reads the PROXY v2 header, greets, offers STARTTLS,
    answers STARTTLS with its 220 and an injected reply in the same send, then does the
    TLS handshake (Python ssl, server side) and answers inside TLS. Records what it read
    inside TLS and any error."""

    def __init__(self, cert):
        self.ctx, self.listener = harness.tls_server_listener(cert, 4)
        self.port = self.listener.getsockname()[1]
        self.inside = []
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.listener.settimeout(30)
            sock, _ = self.listener.accept()
            sock.settimeout(15)
            buf = b""
            while len(buf) < 16:
                buf += sock.recv(4096)
            (length,) = struct.unpack("!H", buf[14:16])
            while len(buf) < 16 + length:
                buf += sock.recv(4096)
            buf = buf[16 + length:]
            sock.sendall(b"220 inject.test ESMTP\r\n")

            def line():
                nonlocal buf
                while b"\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise EOFError(f"closed; partial {buf!r}")
                    buf += chunk
                ln, buf = buf.split(b"\n", 1)
                return ln.rstrip(b"\r").decode()

            check(line().upper().startswith("EHLO"), "expected EHLO")
            sock.sendall(b"250-inject.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            check(line().upper() == "STARTTLS", "expected STARTTLS")
            sock.sendall(b"220 2.0.0 Ready to start TLS\r\n" + INJECTION)
            check(buf == b"", f"smtpscreen sent {buf!r} after its STARTTLS")
            tls = self.ctx.wrap_socket(sock, server_side=True)
            buf = b""
            sock = tls
            while True:
                cmd = line()
                self.inside.append(cmd)
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    sock.sendall(b"250-inject.test inside TLS\r\n250 8BITMIME\r\n")
                elif verb == "QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    sock.sendall(b"250 2.0.0 Ok\r\n")
            sock.close()
        except Exception as e:  # reported by the test
            self.error = repr(e)

    def stop(self):
        try:
            self.listener.close()
        except OSError:
            pass


def main(env):
    ca = harness.make_test_ca(env)
    other = harness.make_test_ca(env, name="unrelated CA", subdir="other-ca")
    # mbedTLS 2.28 matches names against DNS subjectAltNames only: "127.0.0.1" is also a
    # DNS name here, in case smtpscreen checks the name of backend.address.
    backend_cert = ca.issue("backend.test", "rsa", sans=["127.0.0.1"])
    front_cert = ca.issue("mx.test", "ecdsa")
    pf = harness.tls_postfix(env, backend_cert)
    dns = env.rbldnsd()

    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(
        front_cert, **{"backend.tls": "on", "backend.tls_ca": ca.ca_file}))

    # 1. A plain client; the backend leg in TLS.
    s = harness.clean_session(screen, pf, source="127.0.0.7", tag="plain-client")
    m = postfix_saw_tls(pf, "127.0.0.7", s.port)
    harness.log(f"Postfix: TLS from smtpscreen for [127.0.0.7]:{s.port}: {m.group(1)}")
    msg = pf.wait_for_delivery(s.marker)
    check(re.search(r"\(using TLSv1\.2 with cipher \S+", msg),
          f"the Received header of the delivered message does not say TLS:\n{msg[:1500]}")
    screen.wait_for_log(r"(Verified|Trusted) TLS connection established to \[127\.0\.0\.1\]:\d+: TLSv1\.2 with cipher")
    starttls = [ln for ln in s.ehlo.lines if re.match(r"250[- ]STARTTLS\b", ln, re.I)]
    check(len(starttls) == 1, f"the client's EHLO reply must offer smtpscreen's STARTTLS once (the backend's "
                              f"own is not passed on), got {s.ehlo.text!r}")

    # 2. TLS on both legs.
    marker = harness.unique_marker("both-legs")
    r = harness.swaks(screen.port, "127.0.0.8", marker,
                      extra=["--tls", "--tls-verify", "--tls-ca-path", ca.ca_file, "--no-hide-informational"])
    out = r.stdout + r.stderr
    check(r.returncode == 0, f"swaks --tls through smtpscreen with backend.tls = on failed ({r.returncode}):\n{out}")
    harness.check_search(r"TLS started with cipher TLSv1\.2:", out, "swaks: TLS with smtpscreen")
    harness.check_search(r"TLS peer DN=\"?.*/CN=mx\.test\b", out, "swaks sees smtpscreen's certificate, not Postfix's")
    pm = screen.wait_for_log(r"PASS NEW \[127\.0\.0\.8\]:(\d+)")
    port = pm.group(1)
    screen.wait_for_log(harness.re_tls_established("127.0.0.8", port))
    pf.wait_for_delivery(marker)
    postfix_saw_tls(pf, "127.0.0.8", port)
    screen.stop()

    # 3. No CA: encrypted, not verified.
    unverified = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-noca", settings={
        "backend.tls": "on", "backend.tls_ca": None})
    s = harness.clean_session(unverified, pf, source="127.0.0.9", tag="unverified")
    postfix_saw_tls(pf, "127.0.0.9", s.port)
    unverified.wait_for_log(r"TLS connection established to \[127\.0\.0\.1\]:\d+: TLSv1\.2")
    unverified.stop()

    # 4. The wrong CA: no handoff, 421.
    wrong = env.smtpscreen(postfix=pf, dns=dns, name="smtpscreen-wrongca", settings={
        "backend.tls": "on", "backend.tls_ca": other.ca_file})
    c = harness.SmtpClient(wrong.port, source="127.0.0.11", timeout=15)
    port = c.local_port
    reply = c.read_reply(timeout=12)
    check(reply.code == 421, f"with a backend certificate that does not verify, the client must get 421, "
                             f"got {reply.text!r}")
    check("backend.test ESMTP" not in reply.text, f"the backend's greeting reached the client: {reply.text!r}")
    c.check_closed(5, "after the 421")
    c.close()
    m = wrong.wait_for_log(rf"(?i).*\[127\.0\.0\.11\]:{port}\b.*(verif|certificate|trust|x509).*", timeout=5)
    harness.log(f"wrong CA: client got {reply.final!r}; smtpscreen logged: {m.group(0)}")
    wrong.check_no_log(rf"DISCONNECT \[127\.0\.0\.11\]:{port} handoff")
    check(not re.search(rf"client=unknown\[127\.0\.0\.11\]", pf.log()),
          "Postfix accepted a transaction for the client whose handoff should have failed")
    wrong.stop()

    # 5. A backend without STARTTLS: 421, nothing in clear.
    plain = harness.scripted_backend(env, "smtp")
    nostarttls = env.smtpscreen(dns=dns, name="smtpscreen-nostarttls", settings={
        "backend.address": f"127.0.0.1:{plain.port}", "backend.tls": "on", "backend.tls_ca": ca.ca_file})
    c = harness.SmtpClient(nostarttls.port, source="127.0.0.12", timeout=15)
    port = c.local_port
    reply = c.read_reply(timeout=12)
    check(reply.code == 421, f"backend without STARTTLS and backend.tls = on: expected 421, got {reply.text!r}")
    c.check_closed(5, "after the 421")
    c.close()
    nostarttls.wait_for_log(rf"(?i)\[127\.0\.0\.12\]:{port}\b.*STARTTLS")
    sent = b"".join(r["data"] for r in plain.connections)
    check(b"MAIL" not in sent and b"XCLIENT" not in sent, f"the fake backend got {sent!r}")
    nostarttls.stop()

    # 6. The backend injects a reply after its 220 to STARTTLS.
    inj = InjectingTlsBackend(backend_cert)
    env.add_cleanup(inj.stop)
    injected = env.smtpscreen(dns=dns, name="smtpscreen-inject", settings={
        "backend.address": f"127.0.0.1:{inj.port}", "backend.tls": "on", "backend.tls_ca": ca.ca_file})
    c = harness.SmtpClient(injected.port, source="127.0.0.13", timeout=15)
    greeting = c.read_greeting(code=220)
    e = c.expect("EHLO client.example.org", 250)
    n = c.expect("NOOP", 250)
    c.expect("QUIT", 221)
    c.check_closed(5, "after QUIT")
    c.close()
    inj.thread.join(10)
    check(inj.error is None, f"the scripted TLS backend failed: {inj.error}")
    text = greeting.text + "\n" + e.text + "\n" + n.text
    check("INJECTED" not in text, f"the backend's injected reply reached the client: {c.transcript_text()}")
    check(e.lines[0] == "250-inject.test inside TLS",
          f"the client's EHLO must get the EHLO reply the backend made inside TLS, got {e.text!r}")
    harness.log(f"backend injection: backend read inside TLS: {inj.inside}")
    # Issue 4: "Bytes the client pipelined after STARTTLS ... are discarded and logged;
    # the same for the backend leg." INJECTION is what came after the 220.
    time.sleep(0.5)
    check(re.search(r"(?i)^.*(backend|127\.0\.0\.1\]:%d).*\b%d byte\(s\).*(discard|dropped).*$" % (inj.port, len(INJECTION)),
                    injected.log_text(), re.M),
          f"the backend's {len(INJECTION)} bytes after its 220 to STARTTLS were kept from the client (good) but "
          "smtpscreen did not log them (issue 4: discarded and logged, the same for the backend leg); "
          f"log:\n{injected.log_text()}")
    injected.stop()


harness.run(main)
