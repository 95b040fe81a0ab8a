#!/usr/bin/env python3
"""On a client leg in TLS a close_notify is that leg's half-close (issue 22, docs/design.md
"Half-close"): a client that sends its last commands, then its close_notify (and its
FIN), still gets every reply due, then smtpscreen's own close_notify and FIN.
  - Relay: a PASS OLD client does STARTTLS with smtpscreen, sends a message, writes the
    end of data and QUIT in one record, then close_notify and shutdown(SHUT_WR): it
    reads Postfix's 250 and 221, then smtpscreen's close_notify; the message arrives once.
  - Deep tests (the pipelining test off): after STARTTLS, EHLO and MAIL inside TLS, the
    client writes RCPT and QUIT and its close_notify in one go, so the close_notify is
    read with the RCPT that hands it off: the relay still starts, Postfix answers the
    replayed RCPT (250) and the QUIT (221), and the client reads both.
The client is Python's ssl over memory BIOs, which can send its close_notify and go on
reading (SSLSocket.unwrap() would wait for the peer's close_notify first)."""
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


class TlsBioClient:
    """SMTP inside TLS on an SmtpClient's socket after the server's 220 to STARTTLS."""

    def __init__(self, client, ca_file, timeout=15):
        self.sock = client.sock
        self.timeout = timeout
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = harness.python_tls_context(ca_file)
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.plain = b""
        self.peer_close_notify = False
        self.tcp_eof = False
        self._until(self._handshake, "the TLS handshake")

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _pull(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            data = b""
        if data:
            self.incoming.write(data)
        else:
            self.tcp_eof = True
            self.incoming.write_eof()

    def _handshake(self):
        try:
            self.tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def _read_plain(self):
        """Takes the decrypted bytes; True once the peer's close_notify or the TCP EOF came."""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return self.tcp_eof
            except ssl.SSLZeroReturnError:
                self.peer_close_notify = True
                return True
            except ssl.SSLEOFError:
                return True
            if not chunk:
                return True
            self.plain += chunk

    def _until(self, step, what):
        deadline = time.monotonic() + self.timeout
        while True:
            done = step()
            self._flush()
            if done:
                return
            if self.tcp_eof or time.monotonic() >= deadline:
                harness.fail(f"{what}: no answer (tcp eof {self.tcp_eof}); read so far {self.plain!r}")
            self._pull(deadline)

    def send(self, text):
        self.tls.write(text.encode())
        self._flush()

    def reply(self):
        def complete():
            self._read_plain()
            return harness.parse_replies(self.plain)
        self._until(complete, "a reply inside TLS")
        first = harness.parse_replies(self.plain)[0]
        self.plain = self.plain[sum(len(line) + 2 for line in first.lines):]
        return first

    def expect(self, line, code):
        self.send(line + "\r\n")
        r = self.reply()
        check(r.code == code, f"{line} inside TLS: expected {code}, got {r.text!r}")
        return r

    def close_notify_and_half_close(self):
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass          # our close_notify is written; the peer's is still to come
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)

    def replies_until_close(self):
        self._until(self._read_plain, "the server's close_notify or EOF")
        return harness.parse_replies(self.plain)

    def send_then_close_notify(self, text, want, what):
        """Sends text, then close_notify and shutdown(SHUT_WR); checks the codes of every
        reply up to the server's close_notify or EOF."""
        self.send(text)
        self.close_notify_and_half_close()
        replies = self.replies_until_close()
        harness.check_codes(replies, want, f"{what} then close_notify")
        return replies


def starttls(c, ca_file):
    c.expect("STARTTLS", 220)
    check(c.buf == b"", f"bytes after the 220 to STARTTLS: {c.buf!r}")
    return TlsBioClient(c, ca_file)


def relay(env, pf, ca, cert, before_backend):
    # tls.before_backend = on: smtpscreen greets and does the handshake, the EHLO in TLS
    # hands off; off: the backend greets and the relay intercepts the STARTTLS.
    screen = env.smtpscreen(postfix=pf, name=f"relay-{before_backend}", settings=harness.tls_settings(
        cert, **{"greet.wait": "1s", "tls.before_backend": before_backend}))
    harness.clean_session(screen, pf, source="127.0.0.7", expect="new", tag=f"first-{before_backend}")
    marker = harness.unique_marker("tls-halfclose")
    c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=15)
    port = c.local_port
    greeter = "screen.test" if before_backend == "on" else "backend.test"
    check(c.read_reply().final.startswith(f"220 {greeter}"), f"PASS OLD greeting from {greeter}")
    check(harness.ehlo_offers(c.ehlo(), "STARTTLS"), "the EHLO reply must offer smtpscreen's STARTTLS")
    t = starttls(c, ca.ca_file)
    harness.open_data(t)
    replies = t.send_then_close_notify(harness.message_text(marker) + ".\r\nQUIT\r\n", [250, 221],
                                       "TLS relay, '.' + QUIT")
    check(t.peer_close_notify, "smtpscreen must end its TLS direction with a close_notify")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.7", port, "handoff")
    pf.wait_for_delivery(marker)
    check(len(pf.delivered(marker)) == 1, f"{marker} must arrive once")
    harness.log(f"TLS relay [127.0.0.7]:{port}: {[r.code for r in replies]}, then close_notify")


def deep(env, pf, ca, cert):
    screen = env.smtpscreen(postfix=pf, name="deep", settings=harness.tls_settings(cert, **{
        "greet.wait": "1s", "deep.non_smtp_command": "on", "deep.bare_newline": "on"}))
    c = harness.deep_client(screen, "127.0.0.8")
    port = c.local_port
    check(harness.ehlo_offers(c.ehlo(), "STARTTLS"), "smtpscreen's own EHLO reply must offer STARTTLS")
    t = starttls(c, ca.ca_file)
    t.expect("EHLO client.example.org", 250)
    t.expect("MAIL FROM:<sender@example.org>", 250)
    replies = t.send_then_close_notify("RCPT TO:<user@example.test>\r\nQUIT\r\n", [250, 221],
                                       "deep tests in TLS, RCPT (the handoff) + QUIT")
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.8", port, "handoff")
    pf.wait_for_log(harness.postfix_client_regex("127.0.0.8", port))
    harness.log(f"deep TLS [127.0.0.8]:{port}: {[r.code for r in replies]}")


def main(env):
    ca = harness.make_test_ca(env)
    cert = ca.issue("localhost")
    pf = env.postfix()
    relay(env, pf, ca, cert, "on")
    relay(env, pf, ca, cert, "off")
    deep(env, pf, ca, cert)


harness.run(main, timeout=150)
