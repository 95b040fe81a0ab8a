"""SMTP clients: SmtpClient speaks exact bytes (before the greeting, pipelined, half-closed);
the helpers around it read greetings and whole transactions, and run swaks."""

import re
import select
import smtplib
import socket
import subprocess
import time

from .checks import Failure, check
from .processes import which

__all__ = ["Reply", "parse_replies", "SmtpClient", "open_data", "check_codes",
           "smtplib_client", "message_text", "swaks", "ehlo_offers", "pump_bytes",
           "send_slowly"]


class Reply:
    def __init__(self, lines):
        self.lines = lines                       # every line, without CRLF
        self.code = int(lines[-1][:3]) if lines and lines[-1][:3].isdigit() else 0
        self.text = "\n".join(lines)

    @property
    def final(self):
        return self.lines[-1] if self.lines else ""

    def __repr__(self):
        return f"Reply({self.text!r})"


def parse_replies(data):
    """[Reply] of CRLF-terminated reply lines (a trailing partial line is ignored)."""
    replies, lines = [], []
    for raw in data.split(b"\n")[:-1]:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            replies.append(Reply(lines))
            lines = []
    return replies


class SmtpClient:
    """A TCP client on loopback that can bind a source address and send any bytes,
    including before the greeting (pregreet) and PROXY headers."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10, connect=True):
        self.host, self.port, self.source, self.timeout = host, port, source, timeout
        self.buf = b""
        self.transcript = []
        self.sock = None
        self.eof = False
        self.reset = False        # the server's side ended with a TCP RST, not a FIN
        self.connected_at = None
        if connect:
            self.connect()

    def connect(self):
        src = (self.source, 0) if self.source else None
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout,
                                             source_address=src)
        self.connected_at = time.monotonic()
        return self

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    @property
    def local_ip(self):
        return self.sock.getsockname()[0]

    def elapsed(self):
        return time.monotonic() - self.connected_at

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(("C", data))
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
            self.reset = True
        if not chunk:
            self.eof = True
            return False
        self.transcript.append(("S", chunk))
        self.buf += chunk
        return True

    def read_line(self, timeout=None):
        """One line without its CRLF; Failure on EOF or timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\n" not in self.buf:
            try:
                if not self._fill(deadline):
                    raise Failure(f"connection closed while waiting for a line; "
                                  f"partial {self.buf!r}; {self.transcript_text()}")
            except socket.timeout:
                raise Failure(f"timed out waiting for a line from {self.host}:{self.port}; "
                              f"partial {self.buf!r}; {self.transcript_text()}") from None
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def read_reply(self, timeout=None):
        """A whole (multi-line) reply: lines until one with a space after the code. The
        code of the Reply is the final line's (a 220- banner then a 521 gives 521)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        lines = []
        for _ in range(1000):
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return Reply(lines)
        raise Failure(f"reply of more than 1000 lines: {lines[:5]}")

    def read_greeting(self, timeout=15, code=None):
        """The whole greeting: a new client gets '220-' at once and the final line after
        greet.wait, a cached one '220 ' at once. A Reply with every line, plus t_first and
        t_final, the seconds from the connect to its first and its last line. With code,
        Failure unless the greeting's (final) code is that."""
        first = self.read_line(timeout=timeout)
        t_first = self.elapsed()
        lines = [first]
        if len(first) >= 4 and first[3] == "-":
            lines += self.read_reply(timeout=timeout).lines
        reply = Reply(lines)
        reply.t_first, reply.t_final = t_first, self.elapsed()
        if code is not None:
            check(reply.code == code, f"greeting: expected {code}, got {reply.text!r}")
        return reply

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n")
        return self.read_reply(timeout)

    def expect(self, line, code, regex=None, timeout=None):
        reply = self.cmd(line, timeout) if line is not None else self.read_reply(timeout)
        check(reply.code == code,
              f"{line or 'reply'}: expected {code}, got {reply.text!r}")
        if regex:
            check(re.search(regex, reply.text), f"{line}: reply {reply.text!r} does not match /{regex}/")
        return reply

    def drain(self, quiet=0.5, limit=5.0):
        """Reads whatever arrives until the line is quiet for `quiet` seconds."""
        got = b""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], quiet)
            if not r:
                break
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if not chunk:
                self.eof = True
                break
            got += chunk
        got = self.buf + got
        self.buf = b""
        if got:
            self.transcript.append(("S", got))
        return got

    def wait_closed(self, timeout=5):
        """True when the server closes the connection within timeout. Data received in
        the meantime is kept in self.buf."""
        if self.eof:
            return True
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def check_closed(self, timeout=5, what="connection"):
        check(self.wait_closed(timeout),
              f"{what}: expected the server to close within {timeout}s; {self.transcript_text()}")

    def ehlo(self, name="client.example.org"):
        return self.expect(f"EHLO {name}", 250)

    def half_close(self):
        """shutdown(SHUT_WR): the client sends nothing more, but goes on reading (Exim does
        this right after its last command, before it reads the replies)."""
        self.transcript.append(("C", b"<shutdown(SHUT_WR)>"))
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise Failure(f"shutdown(SHUT_WR) failed: {e} (the server closed or reset the "
                          f"connection first); {self.transcript_text()}") from None

    def replies_until_eof(self, timeout=None):
        """Every reply the server sends until its EOF, as [Reply]; Failure on a timeout or
        on a line cut off by the EOF."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            raise Failure(f"no EOF from {self.host}:{self.port} within the time limit; "
                          f"{self.transcript_text()}") from None
        data, self.buf = self.buf, b""
        check(not data or data.endswith(b"\n"),
              f"the last line was cut off by the EOF: {data[-120:]!r}; {self.transcript_text()}")
        return parse_replies(data)

    def send_then_half_close(self, data, timeout=None):
        """Sends data (the last commands, pipelined) and then shutdown(SHUT_WR), as Exim
        does; returns every reply up to the server's EOF."""
        self.send(data)
        self.half_close()
        return self.replies_until_eof(timeout)

    def send_mail(self, marker, mail_from="sender@example.org", rcpts=("user@example.test",),
                  helo="client.example.org", body_lines=(), quit=True, ehlo=True):
        """A whole transaction after the greeting; fails on any unexpected reply."""
        open_data(self, mail_from, rcpts, helo, ehlo)
        text = (f"From: <{mail_from}>\r\nTo: <{rcpts[0]}>\r\nSubject: {marker}\r\n"
                f"Message-ID: <{marker}@example.org>\r\n\r\nbody of {marker}\r\n")
        for line in body_lines:
            text += line + "\r\n"
        self.send(text + ".\r\n")
        final = self.expect(None, 250)
        if quit:
            self.expect("QUIT", 221)
        return final

    def transcript_text(self):
        out = []
        for who, data in self.transcript[-30:]:
            out.append(f"{who}: {data!r}")
        return "transcript:\n    " + "\n    ".join(out)

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def open_data(client, mail_from="sender@example.org", rcpts=("user@example.test",),
              helo="client.example.org", ehlo=True):
    """EHLO (unless ehlo is False), MAIL, RCPT and DATA, each reply read before the next
    command: the client may send the message now. client: anything with expect(line,
    code), an SmtpClient or an SMTP client inside TLS."""
    if ehlo:
        client.expect(f"EHLO {helo}", 250)
    client.expect(f"MAIL FROM:<{mail_from}>", 250)
    for r in rcpts:
        client.expect(f"RCPT TO:<{r}>", 250)
    client.expect("DATA", 354)


def check_codes(replies, want, what):
    """The codes of replies are want (a list), or Failure naming what and every reply."""
    got = [r.code for r in replies]
    check(got == want, f"{what}: expected {want}, got {[r.text for r in replies]}")


def smtplib_client(port, source=None, host="127.0.0.1", timeout=15):
    """smtplib.SMTP connected from a chosen source address (it reads the multi-line banner)."""
    return smtplib.SMTP(host, port, timeout=timeout,
                        source_address=(source, 0) if source else None)


def message_text(marker, mail_from="sender@example.org", rcpt="user@example.test"):
    return (f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: {marker}\r\n"
            f"Message-ID: <{marker}@example.org>\r\n\r\nbody of {marker}\r\n")


def swaks(port, source, marker, to="user@example.test", server="127.0.0.1", extra=(), timeout=30):
    """Runs swaks from a bound source address; returns the CompletedProcess (text)."""
    exe = which("swaks")
    cmd = [exe, "--server", f"{server}:{port}", "--local-interface", source,
           "--to", to, "--from", "sender@example.org", "--helo", "client.example.org",
           "--header", f"Subject: {marker}", "--body", f"body of {marker}",
           "--timeout", "15", "--hide-informational"] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ehlo_offers(reply, keyword):
    return any(re.match(rf"250[- ]{keyword}\b", ln, re.I) for ln in reply.lines)


def pump_bytes(sock, total, pattern=b"A", chunk=65536, stall=3.0, limit=60.0):
    """Writes total bytes (pattern repeated) to sock without blocking forever. Returns
    (bytes_sent, how): "done"; "closed" when the peer closed or reset the connection;
    "stalled" when the peer took nothing for `stall` seconds (it stopped reading: the
    kernel buffers are full, which is how a bounded reader pushes back); "limit" when
    `limit` seconds passed."""
    block = (pattern * (chunk // max(1, len(pattern)) + 1))[:chunk]
    sent = 0
    sock.setblocking(False)
    started = time.monotonic()
    last_progress = started
    how = "done"
    try:
        while sent < total:
            now = time.monotonic()
            if now - started > limit:
                how = "limit"
                break
            if now - last_progress > stall:
                how = "stalled"
                break
            _, w, _ = select.select([], [sock], [], 0.2)
            if not w:
                continue
            try:
                n = sock.send(block[:min(chunk, total - sent)])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # EPIPE, ECONNRESET
                how = "closed"
                break
            if n > 0:
                sent += n
                last_progress = time.monotonic()
    finally:
        sock.setblocking(True)
    return sent, how


def send_slowly(client, data, gap=1.0, deadline=None):
    """Sends data one byte at a time, gap seconds apart, until done, the peer closes,
    or deadline (monotonic); returns the number of bytes sent."""
    if isinstance(data, str):
        data = data.encode()
    sent = 0
    for i in range(len(data)):
        if deadline is not None and time.monotonic() >= deadline:
            break
        try:
            client.sock.sendall(data[i:i + 1])
        except OSError:
            break
        sent += 1
        if i + 1 < len(data):
            time.sleep(gap)
    client.transcript.append(("C", data[:sent]))
    return sent
