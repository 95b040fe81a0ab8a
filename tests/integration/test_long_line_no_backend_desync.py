#!/usr/bin/env python3
"""A command line too long to forward whole never desynchronises the backend (issue 14,
hole 3). Exim's smtp_read_command() keeps 16,384 octets of a command line, drops the
next octet and reads the rest of the line as a new command; Postfix skips the rest. So
the relay must never forward any part of a line it has not seen whole: a longer line is
answered by smtpscreen ('500 5.5.2 Line too long') and dropped up to its LF.

Two backends, each behind a PROXY v2 handoff: a small SMTP server in this file that
reads lines exactly as Exim does (EximLikeBackend), and a real Exim 4.96 (harness.Exim,
exim -bdf with hosts_proxy). A client that already passed (PASS OLD) opens a
transaction and then sends two 16,385-octet lines whose tails are 'XCLIENT
ADDR=1.2.3.4' and 'DATA', the second followed by a body with a bare-LF end of data
('\\n.\\n') and a smuggled MAIL/RCPT. Before the fix the Exim-like backend ran the
XCLIENT, took DATA while the relay was in the command phase and queued the body the
relay never scanned. Now:
  - the backend never runs XCLIENT and never takes DATA: no message reaches it;
  - every command the backend runs is a whole line the client sent;
  - the client gets '500 5.5.2 Line too long' for each long line, in its place.
With the real Exim the same attack leaves no XCLIENT in Exim's log, and nothing is
received or delivered."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

EXIM_CMD_BUFFER = 16384   # Exim's SMTP_CMD_BUFFER_SIZE (src/smtp_in.c)


class EximLikeBackend:
    """An SMTP server on 127.0.0.1 that reads command lines as Exim 4.96 does: up to LF,
    at most 16,384 octets kept; one more octet ends the command as unrecognised (500) and
    is lost, and reading goes on from the octet after it as a new command. In DATA a line
    is '.' alone (LF ends a line, a CR before it is dropped) to end the data, as Exim
    takes a bare-LF end of data too. It offers XCLIENT and runs it. Records, per
    connection: the commands it ran (their text), the XCLIENTs, the messages."""

    def __init__(self):
        self.commands, self.xclients, self.messages = [], [], []
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.listener.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(sock,), daemon=True).start()

    def _session(self, sock):
        reader = self._bytes(sock)
        try:
            header = b"".join(next(reader) for _ in range(16))
            check(header.startswith(harness.PROXY_V2_SIGNATURE), f"no PROXY v2 header: {header!r}")
            for _ in range(int.from_bytes(header[14:16], "big")):
                next(reader)
            sock.sendall(b"220 exim-like.test ESMTP\r\n")
            self._dialog(sock, reader)
        except (StopIteration, OSError):
            pass
        finally:
            sock.close()

    @staticmethod
    def _bytes(sock):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            yield from (bytes([b]) for b in chunk)

    def _command(self, reader):
        """(text, too_long) as smtp_read_command() reads it."""
        buf = b""
        for c in reader:
            if c == b"\n":
                return buf.rstrip(b" \t\r").decode("latin-1"), False
            if len(buf) >= EXIM_CMD_BUFFER:
                return buf.decode("latin-1"), True   # this octet is lost with it
            buf += c
        raise StopIteration

    def _dialog(self, sock, reader):
        mail = rcpt = False
        while True:
            text, too_long = self._command(reader)
            verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
            if too_long:
                sock.sendall(b"500 unrecognized command\r\n")
                continue
            with self.lock:
                self.commands.append(text)
            if verb == "EHLO":
                sock.sendall(b"250-exim-like.test\r\n250-PIPELINING\r\n250-XCLIENT ADDR NAME\r\n250 SIZE 52428800\r\n")
            elif verb == "XCLIENT":
                with self.lock:
                    self.xclients.append(text)
                sock.sendall(b"220 XCLIENT success\r\n")
            elif verb == "MAIL":
                sock.sendall(b"503 sender already given\r\n" if mail else b"250 OK\r\n")
                mail = True
            elif verb == "RCPT":
                sock.sendall(b"250 Accepted\r\n" if mail else b"503 sender not yet given\r\n")
                rcpt = rcpt or mail
            elif verb == "DATA" and rcpt:
                sock.sendall(b"354 Enter message, ending with \".\" on a line by itself\r\n")
                body = b""
                while True:
                    line = b""
                    for c in reader:
                        line += c
                        if c == b"\n":
                            break
                    else:
                        raise StopIteration
                    if line.rstrip(b"\r\n") == b".":
                        break
                    body += line
                with self.lock:
                    self.messages.append(body)
                sock.sendall(b"250 OK id=1smuggled\r\n")
                mail = rcpt = False
            elif verb == "QUIT":
                sock.sendall(b"221 exim-like.test closing connection\r\n")
                return
            elif verb in ("NOOP", "RSET"):
                mail = rcpt = mail and verb == "NOOP"
                sock.sendall(b"250 OK\r\n")
            else:
                sock.sendall(b"500 unrecognized command\r\n")


def long_line(tail):
    """'NOOP aaa...' of 16,385 octets, then `tail`: to Exim, a NOOP that is too long, and
    then `tail` as a command of its own."""
    head = "NOOP " + "a" * (EXIM_CMD_BUFFER + 1 - 5)
    return head + tail


def attack(screen, source, backend_name, marker):
    """Two sessions from `source`: the first passes the greet wait, the second (PASS OLD)
    opens a transaction and sends the two long lines, the body and QUIT. Returns (body,
    what the client got after the first long line, after the second, its source port)."""
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    greeting = c.read_greeting()
    check(backend_name in greeting.final, f"expected the backend's greeting, got {greeting.text!r}")
    c.expect("QUIT", 221)
    c.close()

    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    greeting = c.read_greeting()
    t_final = greeting.t_final
    check(backend_name in greeting.final and t_final < 1.0,
          f"the second session must be handed off at once (PASS OLD), got {greeting.text!r} after {t_final:.2f}s")
    screen.wait_for_log(harness.re_pass_old(source, port))
    ehlo = c.ehlo()
    check("XCLIENT" not in ehlo.text.upper(), f"EHLO through smtpscreen offers XCLIENT: {ehlo.text!r}")
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250)

    c.send(long_line("XCLIENT ADDR=1.2.3.4\r\n"))
    first = c.drain(quiet=1.0, limit=10).decode(errors="replace")
    body = (f"Subject: {marker}\r\n\r\nnot scanned by the relay\n.\n"
            "MAIL FROM:<smuggled@example.org>\r\nRCPT TO:<victim@example.test>\r\n")
    try:
        c.send(long_line("DATA\r\n") + body + "QUIT\r\n")
    except OSError:
        pass   # the backend may have ended the session already
    c.wait_closed(10)
    rest = c.buf.decode(errors="replace")
    harness.log(f"{backend_name}: client got, after the first long line: {first!r}; after the second: {rest!r}")
    c.close()
    return body, first, rest, port


def main(env):
    backend = EximLikeBackend()
    env.add_cleanup(backend.stop)
    screen = env.smtpscreen(settings={"backend.address": f"127.0.0.1:{backend.port}"})
    body, first, rest, port = attack(screen, "127.0.21.1", "exim-like.test", harness.unique_marker("smuggled"))

    with backend.lock:
        commands, xclients, messages = list(backend.commands), list(backend.xclients), list(backend.messages)
    harness.log(f"the backend ran: {[cmd[:60] for cmd in commands]}")
    check(not xclients, f"the backend ran XCLIENT through the relay: {xclients}")
    check(not messages, f"the backend queued a message the relay never scanned: {messages}")
    sent_lines = set(("EHLO client.example.org\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<user@example.test>\r\n"
                      + body + "QUIT\r\n").replace("\r\n", "\n").split("\n"))
    for cmd in commands:
        check(cmd in sent_lines, f"the backend ran {cmd[:80]!r}, which the client never sent as a whole line")
    check(first.startswith("500 5.5.2 Line too long\r\n"),
          f"the first long line: expected smtpscreen's '500 5.5.2 Line too long', got {first!r}")
    check(rest.startswith("500 5.5.2 Line too long\r\n"),
          f"the second long line: expected '500 5.5.2 Line too long' before the backend's replies, got {rest!r}")
    check(rest.count("500 5.5.2 Line too long") == 1 and "221 " in rest,
          f"after the second long line: one 500 of smtpscreen's, then the backend's replies to each line: {rest!r}")
    harness.check_one_disconnect(screen, "127.0.21.1", port)

    # The same against a real Exim 4.96, which reads PROXY v2 from smtpscreen (hosts_proxy).
    exim = harness.Exim(env, name="exim", main_extra="hosts_proxy = 127.0.0.1")
    exim.start_daemon()
    real = env.smtpscreen(name="to-exim", settings={"backend.address": f"127.0.0.1:{exim.port}"})
    marker = harness.unique_marker("smuggled-exim")
    _, first, rest, port = attack(real, "127.0.21.2", "exim.test", marker)
    time.sleep(1)   # Exim writes its log as it goes: let the session's last lines land
    log = exim.log()
    harness.log("Exim's log of the session:\n" + harness.tail(log, 20))
    check("XCLIENT" not in log, f"Exim read the XCLIENT as a command:\n{harness.tail(log, 30)}")
    check(not exim.message_ids(), f"Exim received a message the relay never scanned:\n{harness.tail(log, 30)}")
    check(not exim.delivered(marker), "Exim delivered the smuggled message")
    check(first.startswith("500 5.5.2 Line too long\r\n"),
          f"real Exim, first long line: expected smtpscreen's '500 5.5.2 Line too long', got {first!r}")
    check(rest.startswith("500 5.5.2 Line too long\r\n"),
          f"real Exim, second long line: expected smtpscreen's '500 5.5.2 Line too long' first, got {rest!r}")


if __name__ == "__main__":
    harness.run(main)
