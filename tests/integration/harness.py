"""Integration-test harness for smtpscreen (Python 3 standard library only).

Every test is one file, one scenario, and drives the real programs on loopback:

    import harness
    from harness import check

    def main(env):
        postfix = env.postfix()                       # private Postfix, never the system one
        dns = env.rbldnsd()                           # bl.test / wl.test on 127.0.0.1:ephemeral
        screen = env.smtpscreen(postfix=postfix, dns=dns, settings={"greet.wait": "1s"})
        c = harness.SmtpClient(screen.port, source="127.0.0.7")
        ...

    harness.run(main)

`run` gives the test a fresh temporary directory, a watchdog, and cleans up every
process it started (by PID, never by name) whatever happens. Exit status: 0 pass,
1 fail (with the reason and the tails of every log), 77 skip (meson's convention) when
the machine cannot run it (not root, Postfix or rbldnsd missing).

Environment: SMTPSCREEN is the binary under test (meson sets it); KEEP_TMP=1 keeps the
temporary directory for a look afterwards.
"""

import os
import re
import select
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from postfix_services import INTERNAL_SERVICES

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP_EXIT = 77

# The test DNS zones served by rbldnsd (ip4set data). Addresses are chosen so that each
# test can bind a client to an address with a known listing:
#   127.0.0.2, .10   listed in bl.test (answers 127.0.0.2 and 127.0.0.10)
#   127.0.0.20       listed in wl.test only (answer 127.0.0.3)
#   127.0.0.21       listed in both bl.test (127.0.0.2) and wl.test (127.0.0.3)
#   127.0.0.30       listed in bl.test (for "access permit beats DNSBL")
#   127.0.0.2 also in bl2.test (answer 127.0.0.4), to test "the highest-weighted zone"
#   127.0.0.7, .8, .9 and anything else: listed nowhere (clean clients)
DEFAULT_ZONES = {
    "bl.test": [
        ":127.0.0.2:Listed in bl.test",
        "127.0.0.2",
        "127.0.0.10 :127.0.0.10:Listed as ten",
        "127.0.0.21",
        "127.0.0.30",
    ],
    "bl2.test": [
        ":127.0.0.4:Listed in bl2.test",
        "127.0.0.2",
    ],
    "wl.test": [
        ":127.0.0.3:Allowlisted in wl.test",
        "127.0.0.20",
        "127.0.0.21",
    ],
}

CLEAN_CLIENT = "127.0.0.7"
LISTED_CLIENT = "127.0.0.2"


# --------------------------------------------------------------------------------------
# Failures, skips, checks


class Failure(Exception):
    """The product did not do what docs/design.md and the man pages say (or the scenario
    could not be set up)."""


class Skip(Exception):
    """The machine cannot run this test (exit 77)."""


def fail(message):
    raise Failure(message)


def check(condition, message):
    if not condition:
        raise Failure(message)


def check_search(regex, text, what):
    """Returns the match of regex in text, or fails naming what was searched."""
    m = re.search(regex, text, re.M)
    if not m:
        raise Failure(f"{what}: expected a match for /{regex}/, got:\n{_tail(text, 40)}")
    return m


def check_no_search(regex, text, what):
    m = re.search(regex, text, re.M)
    if m:
        raise Failure(f"{what}: /{regex}/ must not appear, but found: {m.group(0)!r}")


def _tail(text, lines):
    parts = text.splitlines()
    if len(parts) > lines:
        parts = ["..."] + parts[-lines:]
    return "\n".join("    " + p for p in parts)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value (returned) or timeout (Failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def unique_marker(tag="msg"):
    return f"smtpscreen-it-{tag}-{os.getpid()}-{int(time.time() * 1000) % 100000000}"


# --------------------------------------------------------------------------------------
# Ports and processes


def free_port(host="127.0.0.1"):
    """An ephemeral TCP port that is free right now on host (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6_loopback():
    """True when ::1 can be bound (some containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP (for a DNS server)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise Failure("no free UDP+TCP port found")


def _proc_net_listening(port):
    """True when some socket is in LISTEN state on port (reads /proc/net/tcp{,6})."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                found_table = True
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) < 4:
                        continue
                    local, state = fields[1], fields[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return None if not found_table else False


def port_listening(host, port):
    listening = _proc_net_listening(port)
    if listening is not None:
        return listening
    try:  # no /proc/net: fall back to a connect (leaves a line in the server's log)
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def connect_refused(port, host="127.0.0.1", timeout=2):
    """True when a TCP connection to host:port is refused (nothing listening)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def find_smtpscreen():
    exe = os.environ.get("SMTPSCREEN")
    if exe:
        return os.path.abspath(exe)
    root = os.path.dirname(os.path.dirname(HERE))
    for build in ("build", "build-it", "build-asan"):
        candidate = os.path.join(root, build, "smtpscreen")
        if os.access(candidate, os.X_OK):
            return candidate
    raise Failure("SMTPSCREEN is not set and no build*/smtpscreen exists")


def need_programs(*names):
    for name in names:
        if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            raise Skip(f"{name} is not installed (scripts/install-deps installs it)")


def which(name):
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not path:
        raise Skip(f"{name} is not installed (scripts/install-deps installs it)")
    return path


def reexec_in_private_mount_namespace():
    """Runs this test again in a mount namespace of its own (unshare -m, private
    propagation), once, so that bind_resolv_conf changes what this test and the programs
    it starts (a Postfix master and the policy servers it spawns) see as /etc/resolv.conf,
    and nothing else on the host. Call before harness.run; without root nothing happens
    (the test then skips as usual)."""
    if os.environ.get("SMTPSCREEN_IT_MOUNT_NS") == "1" or os.geteuid() != 0:
        return
    unshare = shutil.which("unshare", path=os.environ.get("PATH", "") + ":/usr/bin:/bin")
    if not unshare:
        return
    os.environ["SMTPSCREEN_IT_MOUNT_NS"] = "1"
    sys.stdout.flush()
    os.execv(unshare, [unshare, "--mount", "--propagation", "private", sys.executable,
                       os.path.abspath(sys.argv[0])] + sys.argv[1:])


def bind_resolv_conf(env, nameserver):
    """/etc/resolv.conf naming only `nameserver` (port 53), for this test's mount
    namespace (reexec_in_private_mount_namespace), for programs that read the system
    resolver's configuration and take no DNS server of their own (pyspf in policyd-spf)."""
    if os.environ.get("SMTPSCREEN_IT_MOUNT_NS") != "1":
        raise Skip("needs a private mount namespace (root and unshare(1)) to give the test its own resolv.conf")
    if not os.path.exists("/etc/resolv.conf"):
        raise Skip("/etc/resolv.conf does not exist, so there is nothing to bind a test resolv.conf over")
    path = os.path.join(env.dir, "resolv.conf")
    with open(path, "w") as f:
        f.write(f"nameserver {nameserver}\noptions timeout:2 attempts:2\n")
    os.chmod(path, 0o644)
    r = subprocess.run(["mount", "--bind", path, "/etc/resolv.conf"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure(f"mount --bind {path} /etc/resolv.conf failed: {r.stderr.strip()}")
    env.add_cleanup(lambda: subprocess.run(["umount", "/etc/resolv.conf"], capture_output=True))
    log(f"/etc/resolv.conf in this test's mount namespace: nameserver {nameserver}")


# --------------------------------------------------------------------------------------
# PROXY protocol headers (what a load balancer sends; used to test the listener and to
# hand-check Postfix's haproxy port)

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1_header(src, sport, dst, dport):
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2_header(src, sport, dst, dport):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21  # AF_INET6, STREAM
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11  # AF_INET, STREAM
    payload = addrs + struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(payload)) + payload


def parse_proxy_v2(data):
    """(src, sport, dst, dport, header_length) of a PROXY v2 header at the start of data."""
    check(data.startswith(PROXY_V2_SIGNATURE), f"no PROXY v2 signature in {data[:32]!r}")
    ver_cmd, fam = data[12], data[13]
    (length,) = struct.unpack("!H", data[14:16])
    check(ver_cmd == 0x21, f"PROXY v2 version/command byte {ver_cmd:#x}, expected 0x21")
    body = data[16:16 + length]
    if fam == 0x11:
        src, dst = socket.inet_ntoa(body[0:4]), socket.inet_ntoa(body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
    elif fam == 0x21:
        src = socket.inet_ntop(socket.AF_INET6, body[0:16])
        dst = socket.inet_ntop(socket.AF_INET6, body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
    else:
        raise Failure(f"PROXY v2 family byte {fam:#x} not TCP4/TCP6")
    return src, sport, dst, dport, 16 + length


# --------------------------------------------------------------------------------------
# DNS: a tiny query client, to check rbldnsd answers before a test relies on it


def dns_query(name, server="127.0.0.1", port=53, qtype=1, timeout=1.0):
    """(rcode, [A records]) for name, asked over UDP."""
    qid = os.getpid() & 0xFFFF
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        data, _ = s.recvfrom(4096)
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", data[:12])
    rcode = flags & 0xF
    pos = 12

    def skip_name(p):
        while True:
            n = data[p]
            if n == 0:
                return p + 1
            if n & 0xC0 == 0xC0:
                return p + 2
            p += n + 1

    for _ in range(qd):
        pos = skip_name(pos) + 4
    answers = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return rcode, answers


def reverse_name(ip, zone):
    return ".".join(reversed(ip.split("."))) + "." + zone


# --------------------------------------------------------------------------------------
# SMTP client speaking exact bytes


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

    def read_greeting(self, timeout=None):
        return self.read_reply(timeout)

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


class Session:
    """What clean_session saw: the client, its source port, the marker, the timings."""

    def __init__(self, client, port, marker, first_line, greeting, t_first, t_final, ehlo):
        self.client, self.port, self.marker = client, port, marker
        self.first_line, self.greeting, self.t_first, self.t_final = first_line, greeting, t_first, t_final
        self.ehlo = ehlo


def clean_session(screen, postfix, source=CLEAN_CLIENT, host="127.0.0.1", port=None,
                  expect="new", tag="clean"):
    """One clean client through smtpscreen, checked end to end against docs/design.md, "The life of a connection":
    the first banner line `220-` at once; the final `220 ` line is the backend's greeting
    (`backend.test ESMTP`), after greet.wait for a new client (expect="new"), at once
    for a cached one (expect="old", PASS OLD), a DNSWL-allowlisted one
    (expect="allowlisted", PASS NEW) or one the access list permits (expect="permit",
    ALLOWLISTED); EHLO does not offer XCLIENT/XFORWARD; the message is
    accepted and arrives in the Maildir; smtpscreen logs CONNECT, PASS NEW/OLD and
    DISCONNECT for this client address and port; Postfix logs the real address and port."""
    gw = duration_seconds(screen.settings.get("greet.wait", "6s"))
    marker = unique_marker(tag)
    c = SmtpClient(port or screen.port, host=host, source=source, timeout=gw + 15)
    cport = c.local_port
    first = c.read_line(timeout=gw + 10)
    t_first = c.elapsed()
    if first.startswith("220 "):
        greeting, t_final = Reply([first]), t_first
    else:
        check(first.startswith("220-"), f"first banner line from smtpscreen: expected '220-...', got {first!r}")
        greeting = c.read_reply(timeout=gw + 10)
        greeting = Reply([first] + greeting.lines)
        t_final = c.elapsed()
    check(greeting.code == 220, f"greeting: expected 220, got {greeting.text!r}")
    check(re.match(r"220 backend\.test ESMTP", greeting.final),
          f"the final 220 line must be the backend's greeting '220 backend.test ESMTP', got {greeting.final!r}")
    if expect == "new":
        check(first.startswith("220-"), f"a new client must get the '220-' first banner line, got {first!r}")
        check(t_first < 1.0, f"the '220-' banner line took {t_first:.2f}s (must come at once)")
        check(t_final >= gw - 0.15, f"the final 220 came after {t_final:.2f}s, before greet.wait ({gw}s) ended")
    else:
        check(t_final < min(1.0, gw * 0.6),
              f"a cached (PASS OLD) client got the final 220 after {t_final:.2f}s; it must be handed off at once")
    ehlo = c.ehlo()
    for word in ("XCLIENT", "XFORWARD"):
        check(word not in ehlo.text.upper(), f"EHLO reply through smtpscreen offers {word}: {ehlo.text!r}")
    c.send_mail(marker, ehlo=False)
    c.check_closed(10, "after QUIT")
    c.close()
    screen.wait_for_log(re_connect(source, cport))
    if expect == "permit":
        screen.wait_for_log(rf"ALLOWLISTED {ip_port(source, cport)}")
    else:
        screen.wait_for_log((re_pass_old if expect == "old" else re_pass_new)(source, cport))
    screen.wait_for_log(re_disconnect(source, cport), timeout=10)
    postfix.wait_for_delivery(marker)
    postfix.wait_for_log(postfix_client_regex(source, cport))
    log(f"clean client [{source}]:{cport}: PASS {expect.upper()}, delivered {marker}")
    return Session(c, cport, marker, first, greeting, t_first, t_final, ehlo)


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


# --------------------------------------------------------------------------------------
# A scripted backend (for what Postfix cannot be made to do: stay silent, refuse
# XCLIENT, report the address the proxy connected from)


class FakeBackend:
    """An SMTP server on loopback in a thread. mode:
      "smtp"            220 greeting, 250 to everything, 354 to DATA, 221 to QUIT
      "refuse-xclient"  like smtp, but answers XCLIENT with 550 5.7.0
      "silent"          accepts and never says anything
      "close-at-dot"    like smtp, but closes the connection instead of answering the
                        end of data (a backend that dies mid-message)
    Records, per connection, the peer address and every byte received."""

    def __init__(self, mode="smtp", host="127.0.0.1", greeting="220 fake.test ESMTP"):
        self.mode, self.host, self.greeting = mode, host, greeting
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.connections = []   # dicts: peer, data (bytes), closed (bool)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.listener.settimeout(0.1)
        clients = []
        while not self.stopping.is_set():
            try:
                sock, peer = self.listener.accept()
                sock.setblocking(False)
                record = {"peer": peer, "data": b"", "closed": False, "sock": sock, "pending": b"",
                          "in_data": False}
                with self.lock:
                    self.connections.append(record)
                clients.append(record)
                if self.mode != "silent":
                    self._reply(record, self.greeting)
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                break
            for rec in list(clients):
                try:
                    chunk = rec["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    rec["closed"] = True
                    rec["sock"].close()
                    clients.remove(rec)
                    continue
                with self.lock:
                    rec["data"] += chunk
                rec["pending"] += chunk
                if self.mode != "silent":
                    self._answer(rec)
        for rec in clients:
            rec["sock"].close()

    def _reply(self, rec, text):
        try:
            rec["sock"].setblocking(True)
            rec["sock"].sendall(text.encode() + b"\r\n")
            rec["sock"].setblocking(False)
        except OSError:
            pass

    def _answer(self, rec):
        # A PROXY v2 header from the proxy comes before any command: skip it.
        if rec["pending"].startswith(PROXY_V2_SIGNATURE) and len(rec["pending"]) >= 16:
            (length,) = struct.unpack("!H", rec["pending"][14:16])
            if len(rec["pending"]) < 16 + length:
                return
            rec["pending"] = rec["pending"][16 + length:]
        while b"\n" in rec["pending"]:
            line, rec["pending"] = rec["pending"].split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            if rec["in_data"]:
                if line == ".":
                    rec["in_data"] = False
                    if self.mode == "close-at-dot":
                        try:
                            rec["sock"].shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        rec["pending"] = b""
                        return
                    self._reply(rec, "250 2.0.0 Ok: queued")
                continue
            verb = line.split(" ", 1)[0].upper()
            if line.startswith("PROXY "):
                continue
            if verb == "EHLO":
                self._reply(rec, "250-fake.test\r\n250-PIPELINING\r\n250-XCLIENT ADDR PORT NAME HELO PROTO"
                                 "\r\n250-XFORWARD NAME ADDR PROTO HELO\r\n250 8BITMIME")
            elif verb == "XCLIENT":
                if self.mode == "refuse-xclient":
                    self._reply(rec, "550 5.7.0 Error: insufficient authorization")
                else:
                    self._reply(rec, self.greeting)
            elif verb == "DATA":
                rec["in_data"] = True
                self._reply(rec, "354 End data with <CR><LF>.<CR><LF>")
            elif verb == "QUIT":
                self._reply(rec, "221 2.0.0 Bye")
                try:
                    rec["sock"].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            else:
                self._reply(rec, "250 2.0.0 Ok")

    def wait_connections(self, n, timeout=5):
        return wait_until(lambda: len(self.connections) >= n, timeout,
                          what=f"{n} connection(s) to the fake backend on port {self.port}")

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        try:
            self.listener.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Private Postfix instance


class Postfix:
    """A private Postfix (postfix -c DIR) on 127.0.0.1 with three smtpd ports:
         proxy_port    smtpd_upstream_proxy_protocol = haproxy
         xclient_port  smtpd_authorized_xclient_hosts = <xclient_hosts>
         plain_port    nothing special (for controls)
    mynetworks = 127.0.0.1/32; mail for example.test goes to a Maildir (virtual(8));
    everything else is relayed only for mynetworks."""

    def __init__(self, env, name="postfix", xclient_hosts="127.0.0.1/32",
                 bare_newline="reject", main_extra=None, inet_protocols="all", master_extra=""):
        self.env = env
        self.base = os.path.join(env.dir, name)
        self.config_dir = os.path.join(self.base, "etc")
        self.queue_dir = os.path.join(self.base, "queue")
        self.data_dir = os.path.join(self.base, "data")
        self.mail_base = os.path.join(self.base, "mail")
        self.maildir = os.path.join(self.mail_base, "inbox")
        self.maillog = os.path.join(self.base, "maillog")
        self.xclient_hosts = xclient_hosts
        self.bare_newline = bare_newline
        self.main_extra = dict(main_extra or {})
        self.inet_protocols = inet_protocols
        self.master_extra = master_extra  # more master.cf lines (a policy service, ...)
        self.proxy_port = free_port()
        self.xclient_port = free_port()
        self.plain_port = free_port()
        self.master_pid = None
        self.postfix = which("postfix")
        self.postconf = which("postconf")

    def _supports(self, parameter):
        out = subprocess.run([self.postconf, "-d", parameter], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.startswith(parameter)

    def _write_config(self):
        import pwd
        import grp
        try:
            vuser = pwd.getpwnam("nobody")
            vuid, vgid = vuser.pw_uid, vuser.pw_gid
        except KeyError:
            vuid, vgid = 65534, 65534
        try:
            pf = pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            raise Skip("the postfix user or the postdrop group is missing (postfix not installed?)")
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.mail_base):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        os.chown(self.mail_base, vuid, vgid)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "backend.test",
            "mydomain": "test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": self.inet_protocols,
            "mynetworks": "127.0.0.1/32",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "virtual_mailbox_domains": "example.test",
            "virtual_mailbox_base": self.mail_base,
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": f"static:{vuid}",
            "virtual_gid_maps": f"static:{vgid}",
            "virtual_minimum_uid": "1",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_peername_lookup": "no",
            "smtpd_client_port_logging": "yes",
            "smtp_dns_support_level": "disabled",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.base,
            "syslog_name": "postfix-it",
        }
        if self.bare_newline and self._supports("smtpd_forbid_bare_newline"):
            main["smtpd_forbid_bare_newline"] = self.bare_newline
            main["smtpd_forbid_bare_newline_exclusions"] = ""
        main.update(self.main_extra)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            for k, v in main.items():
                f.write(f"{k} = {v}\n")
        # chroot is "n" everywhere: a chroot would need copies of /etc files in the queue.
        master = f"""\
127.0.0.1:{self.proxy_port} inet n - n - - smtpd
  -o syslog_name=postfix-it/proxy
  -o smtpd_upstream_proxy_protocol=haproxy
127.0.0.1:{self.xclient_port} inet n - n - - smtpd
  -o syslog_name=postfix-it/xclient
  -o smtpd_authorized_xclient_hosts={self.xclient_hosts}
127.0.0.1:{self.plain_port} inet n - n - - smtpd
  -o syslog_name=postfix-it/plain
""" + INTERNAL_SERVICES + self.master_extra
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(master)

    def _run(self, *args, timeout=60):
        cmd = [self.postfix, "-c", self.config_dir] + list(args)
        env = dict(os.environ, MAIL_CONFIG=self.config_dir)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    def start(self):
        if os.geteuid() != 0:
            raise Skip("a private Postfix instance needs root (postfix -c DIR start)")
        self._write_config()
        # The postfix command reports errors on stderr only to a terminal; the details
        # go to maillog_file, which is what we show.
        r = self._run("check")
        if r.returncode != 0:
            raise Failure(f"postfix -c {self.config_dir} check failed (rc {r.returncode}):\n"
                          f"{r.stdout}{r.stderr}{self.log()}")
        for attempt in range(3):
            r = self._run("start")
            if r.returncode == 0:
                break
            # free_port() cannot reserve a port: a test running beside this one may have
            # taken one of ours since. Take new ones and start again.
            if "Address already in use" not in self.log() or attempt == 2:
                raise Failure(f"postfix -c {self.config_dir} start failed (rc {r.returncode}):\n"
                              f"{r.stdout}{r.stderr}{self.log()}")
            log(f"postfix {self.config_dir}: a port was taken before master bound it; new ports")
            self._run("stop")
            self.proxy_port, self.xclient_port, self.plain_port = free_port(), free_port(), free_port()
            self._write_config()
        pid_file = os.path.join(self.queue_dir, "pid", "master.pid")
        pid_text = wait_until(lambda: _read(pid_file).strip(), 10, what=f"{pid_file}")
        self.master_pid = int(pid_text)
        self.env.add_cleanup(self.stop)
        for port in (self.proxy_port, self.xclient_port, self.plain_port):
            wait_until(lambda: port_listening("127.0.0.1", port), 10,
                       what=f"private Postfix listening on 127.0.0.1:{port}")
        log(f"postfix {self.config_dir}: master pid {self.master_pid}, proxy port "
            f"{self.proxy_port}, xclient port {self.xclient_port} ({self.xclient_hosts}), "
            f"plain port {self.plain_port}")
        return self

    def stop(self):
        if self.master_pid is None:
            return
        pid, self.master_pid = self.master_pid, None
        try:
            self._run("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            log(f"postfix master {pid} still alive after stop: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self):
        return _read(self.maillog)

    def wait_for_log(self, regex, timeout=10):
        return wait_until(lambda: re.search(regex, self.log(), re.M), timeout,
                          what=f"/{regex}/ in the Postfix log {self.maillog}")

    def messages(self):
        """[(path, text)] of every message in the Maildir (new/ and cur/)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for n in names:
                p = os.path.join(d, n)
                out.append((p, _read(p)))
        return out

    def delivered(self, marker):
        return [text for _, text in self.messages() if marker in text]

    def wait_for_delivery(self, marker, timeout=15):
        """The text of the message containing marker, once virtual(8) has delivered it."""
        try:
            found = wait_until(lambda: self.delivered(marker), timeout, 0.1,
                               what=f"delivery of {marker!r} to {self.maildir}")
        except Failure as e:
            raise Failure(f"{e}\nPostfix log:\n{_tail(self.log(), 30)}") from None
        return found[0]

    def check_not_delivered(self, marker, wait=1.5):
        """Waits a little (the queue is fast here) and fails if marker was delivered."""
        time.sleep(wait)
        check(not self.delivered(marker), f"message {marker!r} must never arrive, but it did")


# --------------------------------------------------------------------------------------
# A private Exim (Debian's exim4-daemon-heavy, unpacked: the package conflicts with postfix)

EXIM_CACHE = os.environ.get("SMTPSCREEN_EXIM_CACHE", "/var/cache/smtpscreen-tests/exim")
# The .debs with the binary and the files it reads; unpacked with dpkg -x, never installed.
EXIM_PACKAGES = ("exim4-daemon-heavy", "exim4-base", "exim4-config")
# Shared libraries the heavy daemon links that a machine with Postfix usually lacks;
# installed with apt-get (libraries only, no MTA).
EXIM_LIBRARIES = ("libcrypt1", "libdb5.3", "libgnutls-dane0", "libgnutls30", "libidn12", "libidn2-0",
                  "libldap-2.5-0", "libmariadb3", "libnsl2", "libpam0g", "libpcre2-8-0", "libperl5.36",
                  "libpq5", "libsasl2-2", "libspf2-2", "libsqlite3-0")
EXIM_USER = "Debian-exim"   # compiled into Debian's binary; looked up at every start


def _apt(*args, what):
    for attempt in range(6):   # another test or helper may hold the dpkg lock
        r = subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode == 0:
            return
        if "lock" not in (r.stderr + r.stdout).lower():
            break
        time.sleep(5)
    raise Failure(f"apt-get {' '.join(args)} failed ({what}): {_tail(r.stdout + r.stderr, 15)}")


def exim_binary():
    """Path of Debian 12's Exim 4.96 binary (exim4-daemon-heavy), unpacked into EXIM_CACHE:
    downloaded (apt-get download) and unpacked (dpkg -x) when missing, its missing shared
    libraries installed, and the Debian-exim user it looks up at start created. Reused
    by later runs. Needs root."""
    if os.geteuid() != 0:
        raise Skip("Exim runs as root here (exim -C, its own spool)")
    root = os.path.join(EXIM_CACHE, "root")
    exe = os.path.join(root, "usr", "sbin", "exim4")
    if not os.path.exists(exe):
        debs = os.path.join(EXIM_CACHE, "debs")
        os.makedirs(debs, exist_ok=True)
        os.chmod(debs, 0o777)   # apt-get download runs its fetch as _apt
        if not [n for n in os.listdir(debs) if n.endswith(".deb")]:
            log(f"Exim: apt-get download {' '.join(EXIM_PACKAGES)} into {debs}")
            for attempt in range(3):
                r = subprocess.run(["apt-get", "download", *EXIM_PACKAGES], cwd=debs,
                                   capture_output=True, text=True, timeout=300)
                if r.returncode == 0:
                    break
                time.sleep(3)
            else:
                raise Failure(f"apt-get download {' '.join(EXIM_PACKAGES)} failed: {_tail(r.stderr, 10)}")
        tmp = root + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for name in sorted(os.listdir(debs)):
            if name.endswith(".deb"):
                subprocess.run(["dpkg", "-x", os.path.join(debs, name), tmp], check=True, timeout=120)
        os.rename(tmp, root)   # a half-unpacked tree is never taken for a whole one
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=30).stdout
    if "not found" in ldd:
        log(f"Exim: installing the libraries it needs: {' '.join(EXIM_LIBRARIES)}")
        _apt("install", "-y", "--no-install-recommends", *EXIM_LIBRARIES, what="Exim's libraries")
        ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=30).stdout
        missing = [ln.strip() for ln in ldd.splitlines() if "not found" in ln]
        check(not missing, f"{exe} still misses libraries: {missing}")
    if not _user_exists(EXIM_USER):
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/var/spool/exim4",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", EXIM_USER],
                       check=True, capture_output=True, timeout=30)
    return exe


class Exim:
    """A private Exim 4.96 with its own configuration (exim -C FILE), spool and logs under
    the test's directory; runs as root. Two uses:
      sender:   route_to=(host, port): a manualroute router sends every message there
                (plain SMTP, from source address `interface` when set); send() submits a
                message and delivers it at once (-odi), with -v so .last_output holds
                the SMTP dialogue ("SMTP>> ...", "SMTP(shutdown)>>").
      receiver: start_daemon(port) listens on 127.0.0.1:port (exim -bdf -oX PORT) and
                accepts mail for accept_domains into a Maildir (.maildir), for
                everyone (an open test relay on loopback).
    main_extra / transport_extra: extra lines for the main section and the smtp
    transport (e.g. "hosts_proxy = 127.0.0.1" for a receiver behind PROXY protocol).
    .log() is its mainlog; .message_log(msgid) the lines of one message."""

    def __init__(self, env, name="exim", route_to=None, interface=None,
                 accept_domains="example.test", main_extra="", transport_extra=""):
        self.env, self.name = env, name
        self.exe = exim_binary()
        self.dir = os.path.join(env.dir, name)
        self.spool = os.path.join(self.dir, "spool")
        self.log_dir = os.path.join(self.dir, "log")
        self.maildir = os.path.join(self.dir, "Maildir")
        self.config_path = os.path.join(self.dir, "exim.conf")
        self.route_to, self.interface = route_to, interface
        self.accept_domains = accept_domains
        self.main_extra, self.transport_extra = main_extra, transport_extra
        self.port = None
        self.daemon = None
        self.last_output = ""
        import pwd
        user = pwd.getpwnam(EXIM_USER)
        for d in (self.dir, self.spool, self.log_dir, self.maildir):
            os.makedirs(d, exist_ok=True)
        for d in (self.spool, self.log_dir, self.maildir):
            os.chown(d, user.pw_uid, user.pw_gid)
            os.chmod(d, 0o750)
        os.chmod(self.dir, 0o755)
        env.add_log(f"Exim mainlog ({name})", self.mainlog_path)
        self.write_config()

    @property
    def mainlog_path(self):
        return os.path.join(self.log_dir, "mainlog")

    def write_config(self):
        route = ""
        if self.route_to:
            host, port = self.route_to
            route = f"""
to_target:
  driver = manualroute
  domains = *
  transport = remote_smtp
  route_list = * {host}
  self = send
"""
        text = f"""# written by tests/integration/harness.py (class Exim)
exim_path = {self.exe}
spool_directory = {self.spool}
log_file_path = {self.log_dir}/%slog
primary_hostname = exim.test
qualify_domain = example.org
keep_environment =
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
log_selector = +smtp_protocol_error +smtp_syntax_error +incoming_port +outgoing_port \\
  +smtp_connection +received_recipients +delivery_size +pipelining +proxy
tls_advertise_hosts =
{self.main_extra}

begin acl
acl_rcpt:
  accept
acl_data:
  accept

begin routers
{route}
local_mail:
  driver = accept
  domains = {self.accept_domains}
  transport = maildir

begin transports
remote_smtp:
  driver = smtp
  port = {self.route_to[1] if self.route_to else 25}
  hosts_avoid_tls = *
  {f"interface = {self.interface}" if self.interface else ""}
  {self.transport_extra}

maildir:
  driver = appendfile
  directory = {self.maildir}
  maildir_format
  create_directory
  user = {EXIM_USER}
  delivery_date_add
  envelope_to_add
  return_path_add

begin retry
*  *  F,1h,10m
"""
        with open(self.config_path, "w") as f:
            f.write(text)
        os.chmod(self.config_path, 0o644)
        r = subprocess.run([self.exe, "-C", self.config_path, "-bV"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Failure(f"exim -C {self.config_path} -bV failed:\n{r.stdout}{r.stderr}")

    def send(self, marker, mail_from="sender@example.org", rcpt="user@example.test", timeout=60):
        """Submits a message with Subject marker and delivers it at once (-odi, -v): returns
        the exim process's output (the SMTP dialogue), also kept in .last_output."""
        text = message_text(marker, mail_from, rcpt).replace("\r\n", "\n")
        r = subprocess.run([self.exe, "-C", self.config_path, "-odi", "-v", "-f", mail_from, rcpt],
                           input=text, capture_output=True, text=True, timeout=timeout)
        self.last_output = r.stdout + r.stderr
        if r.returncode != 0:
            raise Failure(f"exim -odi exited {r.returncode}:\n{_tail(self.last_output, 40)}")
        return self.last_output

    def start_daemon(self, port=None):
        """Listens on 127.0.0.1:port (free_port() when None) in the foreground (-bdf), as a
        child of the test; stopped when the test ends."""
        self.port = port or free_port()
        logf = open(os.path.join(self.dir, "daemon.out"), "w")
        self.daemon = subprocess.Popen([self.exe, "-C", self.config_path, "-bdf", "-oX", str(self.port)],
                                       stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.env.add_cleanup(self.stop)
        wait_until(lambda: port_listening("127.0.0.1", self.port) or self.daemon.poll() is not None, 10,
                   what=f"exim listening on 127.0.0.1:{self.port}")
        check(self.daemon.poll() is None, f"exim -bdf exited {self.daemon.returncode}: "
                                          f"{_read(os.path.join(self.dir, 'daemon.out'))}{self.log()}")
        log(f"exim {self.name}: daemon pid {self.daemon.pid} on 127.0.0.1:{self.port}")
        return self

    def stop(self):
        terminate(self.daemon)
        self.daemon = None

    def log(self):
        return _read(self.mainlog_path)

    def message_log(self, msgid):
        return [ln for ln in self.log().splitlines() if f" {msgid} " in ln]

    def message_ids(self, marker=None):
        """Ids of the messages Exim received (the '<=' lines), in order."""
        return re.findall(r"^\S+ \S+ (\S+) <= ", self.log(), re.M)

    def queue(self):
        """Exim's own queue listing (exim -bp): empty once everything is delivered."""
        r = subprocess.run([self.exe, "-C", self.config_path, "-bp"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    def delivered(self, marker):
        """Messages in the receiver's Maildir that contain marker."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                text = _read(os.path.join(d, n))
                if marker in text:
                    out.append(text)
        return out


def _read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# --------------------------------------------------------------------------------------
# rbldnsd


class Rbldnsd:
    """rbldnsd on host:port (UDP; 127.0.0.1 and an ephemeral port unless given) serving
    zones {name: [ip4set lines]}; a zone given as (dataset, [lines]) uses that rbldnsd
    dataset instead, e.g. ("generic", ['@ TXT "v=spf1 -all"']) for TXT records."""

    def __init__(self, env, zones=None, name="rbldnsd", host="127.0.0.1", port=None):
        self.env = env
        self.dir = os.path.join(env.dir, name)
        self.zones = zones if zones is not None else DEFAULT_ZONES
        self.host = host
        self.port = port or free_udp_tcp_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "rbldnsd.log")
        self.exe = which("rbldnsd")

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        specs = []
        for zone, lines in self.zones.items():
            dataset = "ip4set"
            if isinstance(lines, tuple):
                dataset, lines = lines
            fname = zone.replace(".", "_") + ".zone"
            with open(os.path.join(self.dir, fname), "w") as f:
                f.write("\n".join(lines) + "\n")
            os.chmod(os.path.join(self.dir, fname), 0o644)
            specs.append(f"{zone}:{dataset}:{fname}")
        cmd = [self.exe, "-n", "-b", f"{self.host}/{self.port}", "-w", self.dir, "-t", "60",
               "-c", "1h"]
        if os.geteuid() == 0:
            cmd += ["-u", "rbldns" if _user_exists("rbldns") else "nobody"]
        cmd += specs
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.env.add_cleanup(self.stop)
        probe_zone = next(iter(self.zones))

        def answers():
            if self.proc.poll() is not None:
                raise Failure(f"rbldnsd exited with {self.proc.returncode}: {_read(self.log_path)}")
            try:
                dns_query(reverse_name("127.0.0.254", probe_zone), server=self.host, port=self.port,
                          timeout=0.2)
                return True
            except OSError:
                return False

        wait_until(answers, 10, what=f"rbldnsd answering on {self.host}:{self.port}")
        log(f"rbldnsd pid {self.proc.pid} on {self.host}:{self.port}, zones {', '.join(self.zones)}")
        return self

    def lookup(self, ip, zone):
        return dns_query(reverse_name(ip, zone), server=self.host, port=self.port)

    def stop(self):
        terminate(self.proc)


def terminate(proc, grace=5):
    """SIGTERM a child we started, SIGKILL it if it is still there after grace seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _user_exists(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# --------------------------------------------------------------------------------------
# smtpscreen


SECTION_ORDER = ["listen", "backend", "greet", "dnsbl", "deep", "access", "cache", "tls",
                 "limits", "smuggling", "log", "stats", "process"]


class Smtpscreen:
    """smtpscreen under test, with an INI written from settings {"section.key": value}
    on top of test defaults (ephemeral listen port, greet.wait 1s, LMDB cache in the
    temp dir, logs to stderr only, the private Postfix's PROXY port as the backend,
    the private rbldnsd as the DNS server). A value of None removes a key."""

    def __init__(self, env, postfix=None, dns=None, settings=None, name="smtpscreen",
                 sites="bl.test=127.0.0.[2..20]*1"):
        self.env = env
        self.name = name
        self.dir = os.path.join(env.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.config_path = os.path.join(self.dir, "smtpscreen.ini")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.exe = find_smtpscreen()
        self.proc = None
        self.terminated = False
        self.starts = 0
        s = {
            "listen.address": f"127.0.0.1:{self.port}",
            "backend.address": f"127.0.0.1:{postfix.proxy_port if postfix else free_port()}",
            "backend.handoff": "proxy-v2",
            "backend.connect_timeout": "3s",
            "greet.wait": "1s",
            # Not the backend's "backend.test ESMTP": a test can tell whose 220 it got.
            "greet.banner": "screen.test ESMTP",
            "cache.backend": "lmdb",
            "cache.path": os.path.join(env.dir, f"{name}.lmdb"),
            "limits.shutdown_grace": "5s",
            "log.syslog": "off",
            "log.stderr": "on",
        }
        if dns is not None:
            s["dnsbl.servers"] = f"127.0.0.1:{dns.port}"
            s["dnsbl.timeout"] = "3s"
            if sites:
                s["dnsbl.sites"] = sites
        for k, v in (settings or {}).items():
            s[k] = v
        self.settings = {k: v for k, v in s.items() if v is not None}
        self.write_config()

    def write_config(self, text=None):
        if text is None:
            text = ini_text(self.settings)
        with open(self.config_path, "w") as f:
            f.write(text)

    def config_text(self):
        return _read(self.config_path)

    def start(self, wait=True, timeout=15, extra_env=None, listen_sockets=None):
        """Starts the binary; with wait, returns once every TCP listen address accepts.
        extra_env: variables added to the environment (NOTIFY_SOCKET, ...).
        listen_sockets: listening sockets passed as systemd's socket activation does
        (descriptors 3, 4, ... with LISTEN_FDS, and LISTEN_PID = the new process)."""
        mode = "w" if self.starts == 0 else "a"
        logf = open(self.log_path, mode)
        if self.starts:
            logf.write(f"----- restart {self.starts} -----\n")
            logf.flush()
        self.log_offset_at_start = os.path.getsize(self.log_path) if self.starts else 0
        cmd = [self.exe, "-c", self.config_path]
        run_env = dict(os.environ, **(extra_env or {}))
        pass_fds = ()
        if listen_sockets:
            pass_fds = tuple(s.fileno() for s in listen_sockets)
            cmd = [sys.executable, "-c", _SOCKET_ACTIVATION_SHIM, ",".join(map(str, pass_fds))] + cmd
        self.proc = subprocess.Popen(cmd, stdout=logf, env=run_env, pass_fds=pass_fds,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir)
        logf.close()
        self.starts += 1
        self.terminated = False
        if self.starts == 1:
            self.env.add_cleanup(self.kill)
            self.env.add_log(f"{self.name} log", self.log_path)
        if wait:
            for host, port in self.listen_endpoints():
                def ready(port=port, host=host):
                    if self.proc.poll() is not None:
                        raise Failure(f"{self.name} exited with {self.proc.returncode} at start; "
                                      f"log:\n{_tail(self.log_text(), 40)}")
                    return port_listening(host, port)
                wait_until(ready, timeout, what=f"{self.name} listening on {host}:{port}")
        log(f"{self.name} pid {self.proc.pid} on port {self.port} ({self.exe})")
        return self

    def listen_endpoints(self):
        out = []
        for item in self.settings.get("listen.address", "").split(","):
            item = item.strip()
            if not item:
                continue
            host, port = item.rsplit(":", 1)
            out.append((host.strip("[]"), int(port)))
        return out

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        check(self.running(), f"{self.name} is not running (exit {self.proc.returncode if self.proc else None})")
        os.kill(self.proc.pid, sig)
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.terminated = True  # stop() then only waits: a second SIGTERM is not the test

    def stop(self, expect_rc=0, timeout=None):
        """SIGTERM, wait (shutdown grace + margin), check the exit status."""
        if not self.proc:
            return None
        if self.proc.poll() is None and not self.terminated:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.terminated = True
        limit = timeout if timeout is not None else (
            duration_seconds(self.settings.get("limits.shutdown_grace", "30s")) + 10)
        try:
            rc = self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"{self.name} did not exit within {limit}s of SIGTERM (killed with SIGKILL)")
        if expect_rc is not None:
            check(rc == expect_rc, f"{self.name} exited with {rc} after SIGTERM, expected {expect_rc}; "
                                   f"log:\n{_tail(self.log_text(), 40)}")
        return rc

    def kill(self):
        """Last resort, by PID."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def log_text(self):
        return _read(self.log_path)

    def log_lines(self):
        return self.log_text().splitlines()

    def wait_for_log(self, regex, timeout=5, since=0):
        """The first match of regex in the log (from character offset since), waiting."""
        def look():
            if not self.running() and self.proc is not None:
                text = self.log_text()[since:]
                m = re.search(regex, text, re.M)
                if m:
                    return m
                raise Failure(f"{self.name} exited ({self.proc.returncode}) before logging /{regex}/; "
                              f"log:\n{_tail(self.log_text(), 40)}")
            return re.search(regex, self.log_text()[since:], re.M)
        try:
            return wait_until(look, timeout, what=f"/{regex}/ in the {self.name} log")
        except Failure as e:
            if "timed out" in str(e):
                raise Failure(f"{e}; log:\n{_tail(self.log_text(), 40)}") from None
            raise

    def check_no_log(self, regex, since=0):
        check_no_search(regex, self.log_text()[since:], f"{self.name} log")

    def log_size(self):
        return len(self.log_text())

    def run_cli(self, *args, timeout=30):
        return run_smtpscreen(list(args), timeout=timeout, cwd=self.dir)


# What systemd does between fork and exec for socket activation: the sockets become
# descriptors 3, 4, ... and LISTEN_PID names the process that will exec smtpscreen (this
# one: exec keeps the PID).
_SOCKET_ACTIVATION_SHIM = r'''
import os, sys
fds = [int(f) for f in sys.argv[1].split(",")]
high = [os.dup(f) for f in fds]       # out of the way of 3, 4, ... first
for i, f in enumerate(high):
    os.dup2(f, 3 + i)                  # dup2 clears close-on-exec
for f in set(high + fds) - set(range(3, 3 + len(fds))):
    os.close(f)
os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
'''


def run_smtpscreen(args, timeout=30, cwd=None):
    """Runs the binary to completion (for --check, --print-config, --version)."""
    return subprocess.run([find_smtpscreen()] + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def ini_text(settings):
    sections = {}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append((name, value))
    order = [s for s in SECTION_ORDER if s in sections] + [s for s in sections if s not in SECTION_ORDER]
    out = ["# written by tests/integration/harness.py"]
    for section in order:
        out.append(f"\n[{section}]")
        for name, value in sections[section]:
            out.append(f"{name} = {value}")
    return "\n".join(out) + "\n"


def ini_keys(text):
    """The "section.key" of every "key = value" line of INI text, in order (comments,
    blank lines and indented lines, which continue a value, are not keys)."""
    keys, section = [], None
    for line in text.splitlines():
        if not line.strip() or line[0] in "#; \t":
            continue
        m = re.match(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"(\w+)\s*=", line)
        if m and section:
            keys.append(f"{section}.{m.group(1)}")
    return keys


def duration_seconds(text):
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        return 30
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# Regexes of the log lines (docs/design.md, "Log lines"), for one client address (and optionally its port).
def ip_port(ip, port=None):
    host = re.escape(ip)
    port_re = str(port) if port is not None else r"\d+"
    return rf"\[{host}\]:{port_re}"


def re_connect(ip, port=None, to=None):
    """to: (ip, port) of the listener the client connected to."""
    dest = ip_port(to[0], to[1]) if to else r"\[[0-9a-fA-F.:]+\]:\d+"
    return rf"CONNECT from {ip_port(ip, port)} to {dest}\b"


def re_pass_new(ip, port=None):
    return rf"PASS NEW {ip_port(ip, port)}"


def re_pass_old(ip, port=None):
    return rf"PASS OLD {ip_port(ip, port)}"


def re_disconnect(ip, port=None):
    return rf"DISCONNECT {ip_port(ip, port)}"


def re_pregreet(ip, port=None):
    return rf"PREGREET \d+ after [0-9.]+s? from {ip_port(ip, port)}: "


def re_dnsbl_rank(ip, rank, port=None):
    return rf"DNSBL rank {rank} for {ip_port(ip, port)}"


def re_noqueue(ip, reply_regex, port=None):
    return rf"NOQUEUE: reject: RCPT from {ip_port(ip, port)}: {reply_regex}"


def postfix_client_regex(ip, port=None):
    """How Postfix (smtpd_client_port_logging = yes) names the client in its log."""
    p = rf":{port}\b" if port is not None else ""
    return rf"client=unknown\[{re.escape(ip)}\]{p}"


# --------------------------------------------------------------------------------------
# TLS (docs/design.md, "TLS") helpers, for the test_tls_*.py scenarios: a private test CA made with the
# openssl command, Postfix's smtpd TLS settings, and STARTTLS clients (openssl s_client
# driven line by line, Python's ssl over an SmtpClient's socket, posttls-finger).


class ServerCert:
    """A certificate issued by TestCA: cert (PEM, leaf first, then any intermediate),
    key (PEM), cn (subject CN), kind ("rsa" or "ecdsa")."""

    def __init__(self, cert, key, cn, kind):
        self.cert, self.key, self.cn, self.kind = cert, key, cn, kind

    def __repr__(self):
        return f"ServerCert({self.cn!r}, {self.kind}, {self.cert})"


def _openssl(*args, cwd=None):
    r = subprocess.run([which("openssl")] + list(args), capture_output=True, text=True,
                       timeout=60, cwd=cwd, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise Failure(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def _openssl_newkey_args(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    if kind == "ecdsa":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    raise Failure(f"unknown key kind {kind!r} (rsa or ecdsa)")


class TestCA:
    """A private CA in directory (created), made with the openssl command: an RSA root
    ("<name> root", ca_file is what clients trust) and, on demand, an intermediate.
    issue() makes server certificates (RSA or ECDSA keys) valid for a few days, with
    serverAuth, the CN and subjectAltNames; chain=True signs with the intermediate and
    writes the cert file as a chain (leaf, intermediate), as a real server has it."""

    def __init__(self, directory, name="smtpscreen test CA"):
        self.dir = directory
        self.name = name
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        self.ca_key = os.path.join(directory, "ca.key")
        self.ca_file = os.path.join(directory, "ca.pem")
        _openssl("req", "-x509", *_openssl_newkey_args("rsa"), "-nodes", "-sha256",
                 "-keyout", self.ca_key, "-out", self.ca_file, "-days", "30",
                 "-subj", f"/O=smtpscreen tests/CN={name} root",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._intermediate = None
        self._serial = int(time.time() * 1000) % 10**9

    def _sign(self, csr, out, issuer_cert, issuer_key, extensions):
        ext = out + ".ext"
        with open(ext, "w") as f:
            f.write(extensions)
        self._serial += 1
        _openssl("x509", "-req", "-in", csr, "-CA", issuer_cert, "-CAkey", issuer_key,
                 "-set_serial", str(self._serial), "-out", out, "-days", "7", "-sha256",
                 "-extfile", ext)

    def intermediate(self):
        """(cert, key) of an intermediate CA under the root, made once."""
        if self._intermediate is None:
            key = os.path.join(self.dir, "intermediate.key")
            csr = os.path.join(self.dir, "intermediate.csr")
            cert = os.path.join(self.dir, "intermediate.pem")
            _openssl("req", "-new", *_openssl_newkey_args("ecdsa"), "-nodes", "-keyout", key,
                     "-out", csr, "-subj", f"/O=smtpscreen tests/CN={self.name} intermediate")
            self._sign(csr, cert, self.ca_file, self.ca_key,
                       "basicConstraints=critical,CA:TRUE,pathlen:0\n"
                       "keyUsage=critical,keyCertSign,cRLSign\n")
            self._intermediate = (cert, key)
        return self._intermediate

    def issue(self, cn, kind="rsa", chain=False, sans=None, name=None, ips=("127.0.0.1",)):
        """A server certificate for cn: ServerCert with cert/key paths in the CA dir.
        sans: extra DNS names (cn and localhost are always in); ips: the IP addresses
        in its subjectAltName (127.0.0.1 unless told otherwise)."""
        name = name or f"{cn}-{kind}{'-chain' if chain else ''}"
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        leaf = os.path.join(self.dir, f"{name}.leaf.pem")
        cert = os.path.join(self.dir, f"{name}.pem")
        _openssl("req", "-new", *_openssl_newkey_args(kind), "-nodes", "-keyout", key,
                 "-out", csr, "-subj", f"/O=smtpscreen tests/CN={cn}")
        names = [cn, "localhost"] + list(sans or [])
        alt = ",".join([f"DNS:{n}" for n in dict.fromkeys(names)] + [f"IP:{ip}" for ip in ips])
        exts = ("basicConstraints=critical,CA:FALSE\n"
                f"keyUsage=critical,digitalSignature{',keyEncipherment' if kind == 'rsa' else ''}\n"
                "extendedKeyUsage=serverAuth\n"
                f"subjectAltName={alt}\n")
        if chain:
            icert, ikey = self.intermediate()
            self._sign(csr, leaf, icert, ikey, exts)
            with open(cert, "w") as f:
                f.write(_read(leaf) + _read(icert))
        else:
            self._sign(csr, leaf, self.ca_file, self.ca_key, exts)
            shutil.copyfile(leaf, cert)
        for p in (cert, key):
            os.chmod(p, 0o644)   # Postfix's smtpd (root at start) and smtpscreen read them
        return ServerCert(cert, key, cn, kind)


def make_test_ca(env, name="smtpscreen test CA", subdir="ca"):
    """A TestCA in the test's temporary directory."""
    return TestCA(os.path.join(env.dir, subdir), name)


def tls_settings(cert, **extra):
    """smtpscreen settings for STARTTLS towards clients with a ServerCert."""
    s = {"tls.cert": cert.cert, "tls.key": cert.key}
    s.update(extra)
    return s


def postfix_tls_main(cert, loglevel=1):
    """main_extra for env.postfix(): Postfix's smtpd offers STARTTLS with cert (a
    ServerCert), logs its TLS handshakes (smtpd_tls_loglevel) and records the TLS
    protocol and cipher in the Received header (smtpd_tls_received_header)."""
    return {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert.cert,
        "smtpd_tls_key_file": cert.key,
        "smtpd_tls_loglevel": str(loglevel),
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_session_cache_database": "",
    }


class TlsPostfix(Postfix):
    """A private Postfix whose smtpd ports offer STARTTLS with cert (a ServerCert): the
    settings of postfix_tls_main, plus tlsmgr(8) in master.cf (without it smtpd logs "no
    entropy for TLS key generation: disabling TLS support"). Otherwise as Postfix."""

    def __init__(self, env, cert, loglevel=1, **kw):
        main_extra = postfix_tls_main(cert, loglevel)
        main_extra.update(kw.pop("main_extra", None) or {})
        super().__init__(env, main_extra=main_extra, **kw)
        self.cert = cert

    def _write_config(self):
        super()._write_config()
        with open(os.path.join(self.config_dir, "master.cf"), "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")


def tls_postfix(env, cert, start=True, **kw):
    """env.postfix() with STARTTLS on every smtpd port (TlsPostfix)."""
    name = kw.pop("name", f"postfix{len(env._postfixes) or ''}")
    pf = TlsPostfix(env, cert, name=name, **kw)
    env._postfixes.append(pf)
    env.add_log(f"Postfix log ({name})", pf.maillog)
    return pf.start() if start else pf


def re_tls_established(ip, port=None, protocol=r"TLSv1\.2"):
    """smtpscreen's (and Postfix's) line for a finished client handshake."""
    return (rf"Anonymous TLS connection established from {ip_port(ip, port)}: {protocol} "
            rf"with cipher (\S+) \((\d+)/(\d+) bits\)")


def read_greeting_full(client, timeout=None):
    """The whole greeting (a new client gets '220-' at once and the final '220 ' after
    greet.wait): a Reply whose code must be 220."""
    reply = client.read_reply(timeout)
    check(reply.code == 220, f"greeting: expected 220, got {reply.text!r}")
    return reply


def ehlo_offers(reply, keyword):
    return any(re.match(rf"250[- ]{keyword}\b", ln, re.I) for ln in reply.lines)


def python_tls_context(ca_file=None, minimum=None, maximum=None):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.check_hostname = True
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def tls_wrap(client, ca_file=None, server_hostname="localhost", context=None, timeout=10):
    """After the server's 220 to STARTTLS: the TLS handshake over client.sock (Python
    ssl); client then speaks SMTP inside TLS. Nothing may be buffered unread (bytes the
    server sent in clear after its 220 would be an injection). Returns the SSLSocket."""
    check(client.buf == b"", f"the server sent bytes after its 220 to STARTTLS, before the "
                             f"handshake: {client.buf!r}")
    ctx = context or python_tls_context(ca_file)
    client.sock.settimeout(timeout)
    client.sock = ctx.wrap_socket(client.sock, server_hostname=server_hostname)
    client.transcript.append(("C", f"<TLS handshake done: {client.sock.version()} "
                                   f"{client.sock.cipher()[0]}>".encode()))
    return client.sock


def peer_cn(sslsock):
    cert = sslsock.getpeercert()
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def starttls_client(port, source=None, ca_file=None, server_hostname="localhost",
                    helo="client.example.org", timeout=15):
    """A client through smtpscreen's STARTTLS: connect (from source), read the whole
    greeting, EHLO (its reply must offer STARTTLS), STARTTLS (220), handshake (Python
    ssl), EHLO again (must not offer STARTTLS any more). Returns (SmtpClient, ehlo
    reply inside TLS)."""
    c = SmtpClient(port, source=source, timeout=timeout)
    read_greeting_full(c, timeout)
    ehlo = c.expect(f"EHLO {helo}", 250)
    check(ehlo_offers(ehlo, "STARTTLS"), f"EHLO reply does not offer STARTTLS: {ehlo.text!r}")
    c.expect("STARTTLS", 220)
    tls_wrap(c, ca_file, server_hostname)
    ehlo2 = c.expect(f"EHLO {helo}", 250)
    check(not ehlo_offers(ehlo2, "STARTTLS"),
          f"the EHLO reply inside TLS offers STARTTLS again: {ehlo2.text!r}")
    return c, ehlo2


class OpensslClient:
    """`openssl s_client -starttls smtp -crlf -brief -nocommands` driven line by line
    (-nocommands: a line starting with R or Q is SMTP, not "renegotiate" or "quit"):
    send() writes a line, expect() waits for a reply code sent inside TLS. The
    brief connection summary (protocol, cipher, peer certificate) is on stderr; the
    process ends when the server closes."""

    def __init__(self, port, host="127.0.0.1", source=None, ca_file=None,
                 helo="client.example.org", extra=(), timeout=20):
        cmd = [which("openssl"), "s_client", "-connect", f"{host}:{port}", "-starttls", "smtp",
               "-name", helo, "-crlf", "-brief", "-nocommands"]
        if source:
            cmd += ["-bind", f"{source}:0"]
        if ca_file:
            cmd += ["-CAfile", ca_file, "-verify_return_error", "-verify_hostname", "localhost"]
        cmd += list(extra)
        self.cmd = cmd
        self.timeout = timeout
        self.out = b""
        self.err = b""
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, "out"), daemon=True),
                        threading.Thread(target=self._pump, args=(self.proc.stderr, "err"), daemon=True)]
        for t in self.readers:
            t.start()
        self.pos = 0

    def _pump(self, stream, attr):
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(1)
            if not chunk:
                return
            with self.lock:
                setattr(self, attr, getattr(self, attr) + chunk)

    def stdout_text(self):
        with self.lock:
            return self.out.decode("utf-8", "replace")

    def stderr_text(self):
        with self.lock:
            return self.err.decode("utf-8", "replace")

    def wait_established(self, timeout=None):
        """The brief summary: {'protocol', 'cipher', 'peer'} once 'CONNECTION ESTABLISHED'."""
        t = timeout or self.timeout
        try:
            wait_until(lambda: "Ciphersuite:" in self.stderr_text() or self.proc.poll() is not None,
                       t, what="openssl s_client handshake")
        except Failure:
            raise Failure(f"openssl s_client: no handshake within {t}s; {self.describe()}") from None
        time.sleep(0.1)
        err = self.stderr_text()
        check("CONNECTION ESTABLISHED" in err,
              f"openssl s_client did not establish TLS; {self.describe()}")
        info = {}
        for key, name in (("protocol", "Protocol version"), ("cipher", "Ciphersuite"),
                          ("peer", "Peer certificate"), ("verification", "Verification")):
            m = re.search(rf"^{name}: (.*)$", err, re.M)
            info[key] = m.group(1).strip() if m else None
        return info

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, line, code, timeout=None):
        """Sends line (unless None) and waits for a whole reply with code; returns its text."""
        if line is not None:
            self.send(line)
        t = timeout or self.timeout

        def reply():
            text = self.stdout_text()[self.pos:]
            m = re.search(r"^(\d{3}) [^\n]*\n", text, re.M)
            if m:
                return text[:m.end()], m
            if self.proc.poll() is not None:
                raise Failure(f"openssl s_client exited ({self.proc.returncode}) waiting for {code} "
                              f"to {line!r}; {self.describe()}")
            return None
        try:
            text, m = wait_until(reply, t, what=f"reply to {line!r}")
        except Failure as e:
            if "timed out" in str(e):
                raise Failure(f"openssl s_client: no reply to {line!r} within {t}s; {self.describe()}") from None
            raise
        self.pos += len(text)
        check(int(m.group(1)) == code, f"openssl s_client: {line!r}: expected {code}, got {text!r}")
        return text

    def send_mail(self, marker, mail_from="sender@example.org", rcpt="user@example.test",
                  helo="client.example.org"):
        """EHLO (inside TLS), MAIL, RCPT, DATA, the message, QUIT; checks every reply."""
        ehlo = self.expect(f"EHLO {helo}", 250)
        check(not re.search(r"^250[- ]STARTTLS", ehlo, re.M | re.I),
              f"EHLO inside TLS offers STARTTLS again: {ehlo!r}")
        self.expect(f"MAIL FROM:<{mail_from}>", 250)
        self.expect(f"RCPT TO:<{rcpt}>", 250)
        self.expect("DATA", 354)
        for ln in message_text(marker, mail_from, rcpt).split("\r\n"):
            self.send(ln)
        # message_text ends with CRLF: the split gave a last empty line already sent
        self.expect(".", 250)
        self.expect("QUIT", 221)
        return ehlo

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def describe(self):
        return (f"command: {' '.join(self.cmd)}\n  exit: {self.proc.poll()}\n  stderr:\n"
                f"{_tail(self.stderr_text(), 20)}\n  stdout:\n{_tail(self.stdout_text(), 20)}")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(5)


def openssl_client(env, port, **kw):
    """An OpensslClient that the test's cleanup kills if it is still running."""
    c = OpensslClient(port, **kw)
    env.add_cleanup(c.close)
    return c


def openssl_handshake(port, source=None, ca_file=None, extra=(), timeout=20, helo="client.example.org"):
    """One `openssl s_client -starttls smtp -brief` handshake then QUIT inside TLS (stdin
    gives QUIT, then EOF; -ign_eof: it reads until the server closes); returns the
    CompletedProcess (stderr has the summary or the error, stdout the 221)."""
    cmd = [which("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp",
           "-name", helo, "-crlf", "-brief", "-nocommands", "-ign_eof"]
    if source:
        cmd += ["-bind", f"{source}:0"]
    if ca_file:
        cmd += ["-CAfile", ca_file, "-verify_return_error"]
    cmd += list(extra)
    r = subprocess.run(cmd, input="QUIT\n", capture_output=True, text=True, timeout=timeout)
    r.cmd = cmd
    return r


def posttls_finger(port, postfix, ca_file=None, level="secure", match=None, extra=(), timeout=60):
    """Postfix's posttls-finger against 127.0.0.1:port (TLS security level, CA file,
    match names), reading main.cf of the private Postfix (there is no /etc/postfix);
    returns the CompletedProcess (its report is on stdout/stderr)."""
    exe = which("posttls-finger")
    cmd = [exe, "-c", "-l", level, "-L", "routine,certmatch,summary,cache"]
    if ca_file:
        cmd += ["-F", ca_file]
    cmd += list(extra) + [f"[127.0.0.1]:{port}"]
    if match:
        cmd += list(match) if isinstance(match, (list, tuple)) else [match]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, MAIL_CONFIG=postfix.config_dir))
    r.cmd = cmd
    return r


# (end of the TLS helpers)


# --------------------------------------------------------------------------------------
# The test environment and runner


class Env:
    def __init__(self, name):
        self.name = name
        base = os.environ.get("SMTPSCREEN_IT_TMP")  # optional parent dir
        self.dir = tempfile.mkdtemp(prefix=f"smtpscreen-it-{name}-", dir=base)
        os.chmod(self.dir, 0o755)  # virtual(8) runs as nobody and must reach the Maildir
        self._cleanups = []
        self._logs = []
        self._postfixes = []
        self._screens = []

    def add_cleanup(self, fn):
        self._cleanups.append(fn)

    def add_log(self, title, path):
        self._logs.append((title, path))

    def postfix(self, start=True, **kw):
        name = kw.pop("name", f"postfix{len(self._postfixes) or ''}")
        pf = Postfix(self, name=name, **kw)
        self._postfixes.append(pf)
        self.add_log(f"Postfix log ({name})", pf.maillog)
        return pf.start() if start else pf

    def rbldnsd(self, zones=None, start=True, **kw):
        d = Rbldnsd(self, zones, **kw)
        return d.start() if start else d

    def smtpscreen(self, start=True, **kw):
        s = Smtpscreen(self, **kw)
        self._screens.append(s)
        return s.start() if start else s

    def final_checks(self):
        """After a passing scenario: every smtpscreen still running stops cleanly on
        SIGTERM (exit 0), and no log holds a sanitizer report (build-asan)."""
        for s in self._screens:
            if s.running():
                s.stop()
            m = re.search(SANITIZER_REPORT, s.log_text(), re.M)
            if m:
                raise Failure(f"{s.name}: sanitizer report in its log: {m.group(0)!r}; log:\n"
                              f"{_tail(s.log_text(), 60)}")

    def fake_backend(self, mode="smtp", **kw):
        b = FakeBackend(mode, **kw)
        self.add_cleanup(b.stop)
        return b

    def dump_logs(self, lines=60):
        for title, path in self._logs:
            text = _read(path)
            print(f"----- {title}: {path} -----")
            print(_tail(text, lines) if text else "    (empty)")

    def cleanup(self):
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up
                print(f"cleanup error: {e!r}")


SANITIZER_REPORT = (r"ERROR: AddressSanitizer.*|ERROR: LeakSanitizer.*|runtime error: .*"
                    r"|SUMMARY: (Address|Undefined|Leak)Sanitizer.*")


class _Watchdog(Exception):
    pass


def run(main, timeout=120):
    """Runs main(env) as a test: exit 0 pass, 1 fail, 77 skip; always cleans up."""
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    if name.startswith("test_"):
        name = name[5:]
    env = None
    rc = 1

    def on_alarm(signum, frame):
        raise _Watchdog(f"test watchdog: still running after {timeout}s")

    def on_term(signum, frame):
        raise _Watchdog(f"killed by signal {signum} (meson timeout?)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(timeout)
    started = time.monotonic()
    try:
        env = Env(name)
        log(f"{name}: temp dir {env.dir}")
        main(env)
        env.final_checks()
        rc = 0
        print(f"PASS {name} ({time.monotonic() - started:.1f}s)")
    except Skip as e:
        rc = SKIP_EXIT
        print(f"SKIP {name}: {e}")
    except (Failure, _Watchdog) as e:
        print(f"FAIL {name}: {e}")
        if env:
            env.dump_logs()
    except Exception:
        print(f"FAIL {name}: unexpected error in the test")
        traceback.print_exc()
        if env:
            env.dump_logs()
    finally:
        signal.alarm(0)
        if env:
            try:
                env.cleanup()
            except _Watchdog:
                pass
            if os.environ.get("KEEP_TMP") == "1" or (rc == 1 and os.environ.get("KEEP_TMP_ON_FAIL") == "1"):
                print(f"kept {env.dir}")
            else:
                shutil.rmtree(env.dir, ignore_errors=True)
    sys.stdout.flush()
    sys.exit(rc)


# --------------------------------------------------------------------------------------
# Deep protocol tests and SMTP smuggling (issue 5; used by test_deep_*.py and
# test_smuggling_*.py)

DEEP_TESTS_ON = {"deep.pipelining": "on", "deep.non_smtp_command": "on", "deep.bare_newline": "on"}



class HostileTargets:
    """What the hostile-input tests attack: a smtpscreen with the greet wait and enforce,
    and one with the deep tests too, both in front of one scripted backend. Record what
    each attack got in .answers; finish() checks that both survived with their RSS grown
    by less than 30 MiB (also_check(screen) runs on each first), logs the answers and
    stops them."""

    def __init__(self, env):
        bound_asan_quarantine()
        self.backend = scripted_backend(env, "smtp")
        settings = {"backend.address": f"127.0.0.1:{self.backend.port}", "greet.wait": "1s",
                    "greet.action": "enforce", "cache.backend": "memory", "cache.path": None}
        self.screen = env.smtpscreen(settings=dict(settings))
        self.deep = env.smtpscreen(name="deep", settings=deep_settings(dict(settings)))
        self.rss0 = {s.name: rss_mib(s.pid) for s in (self.screen, self.deep)}
        self.answers = {}

    def finish(self, also_check=None):
        for s in (self.screen, self.deep):
            check(s.running(), f"{s.name} died")
            if also_check:
                also_check(s)
            growth = rss_mib(s.pid) - self.rss0[s.name]
            check(growth < 30, f"{s.name}: RSS grew by {growth:.1f} MiB")
        for k, v in self.answers.items():
            log(f"{k}: {v}")
        self.screen.stop()
        self.deep.stop()


def deep_settings(extra=None):
    """smtpscreen settings with every deep protocol test on, plus extra."""
    s = dict(DEEP_TESTS_ON)
    s.update(extra or {})
    return s


def deep_greeting(client, screen):
    """Reads the greeting of a session in which smtpscreen runs the deep tests itself
    (docs/design.md, step 6): the '220-' line at once, then, when greet.wait is over, the final
    '220 <greet.banner>' line -- smtpscreen's own, never the backend's. Returns the Reply."""
    gw = duration_seconds(screen.settings.get("greet.wait", "6s"))
    first = client.read_line(timeout=gw + 5)
    t_first = client.elapsed()
    check(first.startswith("220-"), f"deep-tested client: first banner line must be '220-...', got {first!r}")
    check(t_first < 1.0, f"the '220-' banner line took {t_first:.2f}s (must come at once)")
    rest = client.read_reply(timeout=gw + 10)
    t_final = client.elapsed()
    banner = screen.settings.get("greet.banner", "")
    check(rest.code == 220 and rest.final == f"220 {banner}",
          f"deep-tested client: the final greeting line must be smtpscreen's own '220 {banner}', "
          f"got {rest.text!r}")
    check(t_final >= gw - 0.15, f"the final 220 came after {t_final:.2f}s, before greet.wait ({gw}s) ended")
    return Reply([first] + rest.lines)


def deep_client(screen, source, timeout=15):
    """A SmtpClient from source that has read smtpscreen's deep-test greeting."""
    c = SmtpClient(screen.port, source=source, timeout=timeout)
    deep_greeting(c, screen)
    return c


# The published 2023 SMTP smuggling end-of-data variants (SEC Consult): each stands
# where a receiver that is lax about line ends may see "<CR><LF>.<CR><LF>".
SMUGGLING_VECTORS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF.LF": b"\r\n.\n",
}


def smuggling_payload(vector, marker, smuggled_marker, rcpt="user@example.test",
                      smuggled_from="smuggler@example.org"):
    """The DATA text of a smuggling attempt, up to and including the client's real end
    of data: a message with Subject marker, then the vector, then a whole second SMTP
    transaction (MAIL/RCPT/DATA and a message with Subject smuggled_marker), then the
    client's real end of data <CR><LF>.<CR><LF>, which also ends the smuggled message
    for a receiver that takes the vector for an end of data: that receiver queues two
    messages; one that does not queues one message that holds the second transaction
    as body text."""
    first = (f"From: <sender@example.org>\r\nTo: <{rcpt}>\r\nSubject: {marker}\r\n"
             f"Message-ID: <{marker}@example.org>\r\n\r\nbody of {marker}").encode()
    second = (f"MAIL FROM:<{smuggled_from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
              f"From: <{smuggled_from}>\r\nTo: <{rcpt}>\r\nSubject: {smuggled_marker}\r\n"
              f"Message-ID: <{smuggled_marker}@example.org>\r\n\r\nbody of {smuggled_marker}").encode()
    return first + vector + second + b"\r\n.\r\n"


def postfix_queued_ids(postfix):
    """Queue ids of every message Postfix's qmgr took into the active queue (one per
    message actually accepted), in log order."""
    return re.findall(r"qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, size=\d+", postfix.log())


# ======================================================================================
# >>> hostile/fault/limits/soak helpers (issue 6) >>>
# Used by test_hostile_*.py, test_fault_*.py, test_limits_*.py, test_timeout_*.py and
# test_soak.py: reading a process's memory, CPU time and descriptors from /proc; one
# DISCONNECT line per session; pushing garbage at a socket; a scripted UDP DNS server
# (SERVFAIL, garbage, silence...); a scripted backend that misbehaves on cue; and a
# sink backend in its own process (it can be SIGKILLed and restarted) that records
# every message it answered 250 to.

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_status_kib(pid, field="VmRSS"):
    """A "kB" field of /proc/PID/status (VmRSS, VmHWM, VmSize...), in KiB; 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mib(pid):
    return proc_status_kib(pid, "VmRSS") / 1024.0


def cpu_seconds(pid):
    """User + system CPU time of pid so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def open_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def set_open_files_limit(pid, soft, hard=None):
    """RLIMIT_NOFILE of a running process (prlimit(2)); returns the old (soft, hard)."""
    import resource
    return resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard if hard is not None else soft))


def raise_own_open_files(want):
    """Raises this process's soft RLIMIT_NOFILE towards want (never above the hard
    limit); children started afterwards inherit it. Returns the soft limit now in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def is_sanitized_binary(exe=None):
    """True when the smtpscreen under test was built with AddressSanitizer."""
    exe = exe or find_smtpscreen()
    try:
        out = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=10).stdout
        if "libasan" in out:
            return True
        with open(exe, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def bound_asan_quarantine(mb=16):
    """Under AddressSanitizer, freed memory waits in a quarantine of up to 256 MB before
    reuse and is never returned to the kernel, which reads as RSS growth in the
    memory-bound tests: cap the quarantine at mb and let the allocator release freed
    pages, for the smtpscreen processes started from now on (they inherit the
    environment). Returns whether the binary is sanitized."""
    if not is_sanitized_binary():
        return False
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in opts:
        opts = ((opts + ":") if opts else "") + f"quarantine_size_mb={mb}:thread_local_quarantine_size_kb=64"
    if "allocator_release_to_os_interval_ms" not in opts:
        # ASan's allocator never gives freed memory back to the kernel unless told to.
        opts += ":allocator_release_to_os_interval_ms=500"
    os.environ["ASAN_OPTIONS"] = opts
    return True


class RssSampler:
    """Samples a process's VmRSS (MiB) in a thread every interval seconds: .peak, .samples."""

    def __init__(self, pid, interval=0.2):
        self.pid, self.interval = pid, interval
        self.samples = []
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                v = rss_mib(self.pid)
            except OSError:
                return
            self.samples.append((time.monotonic(), v))
            self.peak = max(self.peak, v)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.peak


def re_disconnect_exact(ip, port):
    """A DISCONNECT line for exactly this client port (port 123 does not match 1234)."""
    return rf"DISCONNECT {ip_port(ip, port)}(?!\d)"


def disconnect_lines(screen, ip, port):
    rx = re.compile(re_disconnect_exact(ip, port))
    return [ln for ln in screen.log_lines() if rx.search(ln)]


def disconnect_outcome(line):
    """(outcome, seconds) of a 'DISCONNECT [ip]:port OUTCOME after T' line."""
    m = re.search(r"DISCONNECT \S+ (\S+) after ([0-9.]+)", line)
    return (m.group(1), float(m.group(2))) if m else (None, None)


def check_one_disconnect(screen, ip, port, outcome=None, timeout=10, settle=0.3):
    """Waits for the session's DISCONNECT line, then checks that there is exactly one
    (docs/design.md, step 9) and, with outcome (a regex), that it names that outcome. Returns
    (outcome, seconds)."""
    screen.wait_for_log(re_disconnect_exact(ip, port), timeout=timeout)
    time.sleep(settle)
    lines = disconnect_lines(screen, ip, port)
    check(len(lines) == 1, f"expected exactly one DISCONNECT line for [{ip}]:{port}, got {len(lines)}: {lines}")
    got, secs = disconnect_outcome(lines[0])
    if outcome is not None:
        check(got is not None and re.fullmatch(outcome, got),
              f"DISCONNECT for [{ip}]:{port}: expected outcome /{outcome}/, got {lines[0]!r}")
    return got, secs


def read_full_greeting(client, timeout=15):
    """(Reply with every greeting line, seconds to the first line, seconds to the last)."""
    first = client.read_line(timeout=timeout)
    t_first = client.elapsed()
    if len(first) >= 4 and first[3] == "-":
        rest = client.read_reply(timeout=timeout)
        return Reply([first] + rest.lines), t_first, client.elapsed()
    return Reply([first]), t_first, t_first


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


def abort_postfix(postfix):
    """'postfix abort' on a private Postfix: every process is told to stop at once, which
    kills the sessions in flight (a backend crash); postfix.start() brings it back."""
    pid = postfix.master_pid
    if pid is None:
        return
    postfix._run("abort", timeout=30)
    wait_until(lambda: not pid_alive(pid), 15, what="postfix abort")
    postfix.master_pid = None


# --------------------------------------------------------------------------------------
# A scripted UDP DNS server


def _dns_parse_query(packet):
    """(id, flags, qname, qtype, end of the question) of a DNS query, or None."""
    if len(packet) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", packet[:6])
    if qd < 1:
        return None
    pos, labels = 12, []
    while pos < len(packet):
        n = packet[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(packet):
            return None
        labels.append(packet[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    if pos + 4 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[pos:pos + 2])[0]
    return qid, flags, ".".join(labels).lower(), qtype, pos + 4


class ScriptedDns:
    """A DNS server on 127.0.0.1:port (UDP only; nothing listens on the TCP port) in a
    thread, answering each query by the zone its name is under: zones {zone: mode}.
    Modes:
      listed        A 127.0.0.2, TTL 60
      nxdomain      NXDOMAIN              nodata     NOERROR, no answer
      servfail      SERVFAIL              refused    REFUSED
      silent        never answers
      truncated     TC bit set, no answer (a resolver retries over TCP: refused here)
      garbage       the query's id, then random bytes
      garbage-answer  header and question intact, random bytes after them
      bad-rdlength  an A record whose RDLENGTH runs past the end of the packet
      short         a 5-byte datagram
      wrong-id      a correct 'listed' answer with another query id (must be ignored)
      slow:SECONDS  'listed', but only after SECONDS
    Names under no zone get NXDOMAIN. .queries is [(monotonic time, name, qtype)]."""

    def __init__(self, zones, port=None):
        self.zones = {z.lower().rstrip("."): m for z, m in zones.items()}
        self.port = port or free_udp_tcp_port()
        self.queries = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.timers = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def mode_for(self, name):
        for zone, mode in self.zones.items():
            if name == zone or name.endswith("." + zone):
                return mode
        return "nxdomain"

    def queries_for(self, zone):
        with self.lock:
            return [q for q in self.queries if q[1] == zone or q[1].endswith("." + zone)]

    def _serve(self):
        while not self.stopping.is_set():
            try:
                packet, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            q = _dns_parse_query(packet)
            if q is None:
                continue
            qid, _, name, qtype, qend = q
            with self.lock:
                self.queries.append((time.monotonic(), name, qtype))
            reply = self._reply(packet, qid, name, qtype, qend)
            if reply is None:
                continue
            delay, data = reply
            if delay:
                t = threading.Timer(delay, self._send, (data, peer))
                t.daemon = True
                self.timers.append(t)
                t.start()
            else:
                self._send(data, peer)

    def _send(self, data, peer):
        try:
            self.sock.sendto(data, peer)
        except OSError:
            pass

    @staticmethod
    def _answer(qid, question, rcode=0, answers=(), flags_extra=0, ttl=60):
        flags = 0x8180 | flags_extra | rcode  # QR, RD, RA
        out = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0) + question
        for a in answers:
            out += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(a)
        return out

    def _reply(self, packet, qid, name, qtype, qend):
        mode = self.mode_for(name)
        question = packet[12:qend]
        listed = ["127.0.0.2"] if qtype == 1 else []
        if mode == "silent":
            return None
        if mode == "listed":
            return 0, self._answer(qid, question, answers=listed)
        if mode == "nxdomain":
            return 0, self._answer(qid, question, rcode=3)
        if mode == "nodata":
            return 0, self._answer(qid, question)
        if mode == "servfail":
            return 0, self._answer(qid, question, rcode=2)
        if mode == "refused":
            return 0, self._answer(qid, question, rcode=5)
        if mode == "truncated":
            return 0, self._answer(qid, question, flags_extra=0x0200)
        if mode == "garbage":
            return 0, struct.pack("!H", qid) + os.urandom(61)
        if mode == "garbage-answer":
            head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
            return 0, head + os.urandom(23)
        if mode == "bad-rdlength":
            head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
            return 0, head + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 200) + socket.inet_aton("127.0.0.2")
        if mode == "short":
            return 0, struct.pack("!H", qid) + b"\x81\x80\x00"
        if mode == "wrong-id":
            return 0, self._answer((qid + 1) & 0xFFFF, question, answers=listed)
        if mode.startswith("slow:"):
            return float(mode.split(":", 1)[1]), self._answer(qid, question, answers=listed)
        raise Failure(f"ScriptedDns: unknown mode {mode!r}")

    def stop(self):
        self.stopping.set()
        for t in self.timers:
            t.cancel()
        self.thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass


def scripted_dns(env, zones, port=None):
    d = ScriptedDns(zones, port)
    env.add_cleanup(d.stop)
    log(f"scripted DNS on 127.0.0.1:{d.port}: {d.zones}")
    return d


def dead_udp_port():
    """A UDP (and TCP) port on 127.0.0.1 where nothing listens: a DNS server that is down."""
    return free_udp_tcp_port()


# --------------------------------------------------------------------------------------
# A scripted backend, one thread per connection, restartable on the same port


class ScriptedBackend:
    """An SMTP backend on 127.0.0.1 that misbehaves on cue. mode:
      smtp              220, 250 to everything (PIPELINING offered), 354 to DATA, 250
                        after the end of data (message recorded), 221 to QUIT
      silent            accepts, reads, never says anything
      greet-then-close  sends the greeting, then closes
      partial-greeting  sends "220-" and never the final line
      no-read           greets, then never reads another byte (its buffers fill up)
      close-mid-data    after DATA, closes once some message bytes arrived
      reset-mid-data    the same with a TCP RST (SO_LINGER 0)
      close-at-dot      closes instead of answering the end of data
      stall-at-dot      never answers the end of data (keeps reading)
      half-close-after-quit  answers QUIT with 221, then shuts down only its write side
                        (shutdown(SHUT_WR)) and reads on until the proxy's EOF
    greeting: the greeting line(s) (e.g. "421 4.3.2 busy" for a backend that greets 4xx).
    half_close_after: when set (a number, read when a connection is accepted), the
    backend half-closes once it has sent that many replies after its greeting, answers
    nothing more and reads on until the proxy's EOF (any mode that answers).
    A PROXY v1/v2 header before the commands is parsed and recorded. Per connection
    (.connections): peer, proxy (src, sport) or None, data (every byte), messages
    (bodies it answered 250 to), replies (how many replies it sent), sent (the bytes of
    those replies, greeting included), closed, eof (it read the proxy's FIN), reset (its
    read failed: an RST), half_closed (it shut down its own write side), self_closed (it
    closed the connection itself, as after QUIT)."""

    def __init__(self, mode="smtp", greeting="220 scripted.test ESMTP", port=0, host="127.0.0.1",
                 half_close_after=None):
        self.mode, self.greeting, self.host, self.port = mode, greeting, host, port
        self.half_close_after = half_close_after
        self.connections = []
        self.lock = threading.Lock()
        self.listener = None
        self.threads = []
        self.socks = []
        self.stopping = threading.Event()
        self.start()

    def start(self):
        self.stopping = threading.Event()
        ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ln.bind((self.host, self.port))
        ln.listen(256)
        ln.settimeout(0.1)
        self.listener = ln
        self.port = ln.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, args=(ln, self.stopping), daemon=True)
        t.start()
        self.threads = [t]
        return self

    def _accept_loop(self, ln, stopping):
        while not stopping.is_set():
            try:
                sock, peer = ln.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = {"peer": peer, "proxy": None, "data": b"", "messages": [], "replies": 0,
                   "closed": False, "sock": sock, "sent": b"", "eof": False, "reset": False,
                   "half_closed": False, "self_closed": False, "half_close_after": self.half_close_after}
            with self.lock:
                self.connections.append(rec)
                self.socks.append(sock)
            t = threading.Thread(target=self._handle, args=(rec, stopping), daemon=True)
            t.start()
            self.threads.append(t)

    def _send(self, rec, text):
        if rec["half_closed"]:
            return False
        try:
            rec["sock"].sendall(text.encode() + b"\r\n")
            with self.lock:
                rec["replies"] += 1
                rec["sent"] += text.encode() + b"\r\n"
        except OSError:
            return False
        limit = rec["half_close_after"]
        if limit is not None and rec["replies"] - 1 >= limit:
            self._half_close(rec)
        return True

    def _half_close(self, rec):
        try:
            rec["sock"].shutdown(socket.SHUT_WR)
        except OSError:
            pass
        rec["half_closed"] = True

    def _close(self, rec, reset=False):
        s = rec["sock"]
        try:
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass
        rec["closed"] = True
        rec["self_closed"] = True

    def _handle(self, rec, stopping):
        s = rec["sock"]
        s.settimeout(0.2)
        mode = self.mode
        if mode != "silent" and mode != "partial-greeting":
            self._send(rec, self.greeting)
        elif rec["half_close_after"] == 0:
            self._half_close(rec)
        if mode == "partial-greeting":
            self._send(rec, "220-scripted.test greeting that never ends")
        if mode == "greet-then-close":
            return self._close(rec)
        if mode == "no-read":
            while not stopping.is_set():
                time.sleep(0.1)
            return self._close(rec)
        buf = b""
        header_done = False
        in_data = False
        message = b""
        while not stopping.is_set():
            try:
                chunk = s.recv(262144)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
                rec["reset"] = True
            if not chunk:
                rec["eof"] = not rec["reset"]
                rec["closed"] = True
                try:
                    s.close()
                except OSError:
                    pass
                return
            with self.lock:
                rec["data"] += chunk
            buf += chunk
            if not header_done:
                if buf.startswith(PROXY_V2_SIGNATURE[:len(buf)]) and len(buf) < 16:
                    continue
                if buf.startswith(PROXY_V2_SIGNATURE):
                    (length,) = struct.unpack("!H", buf[14:16])
                    if len(buf) < 16 + length:
                        continue
                    try:
                        src, sport, _, _, n = parse_proxy_v2(buf)
                        rec["proxy"] = (src, sport)
                    except Failure:
                        n = 16 + length
                    buf = buf[n:]
                elif buf.startswith(b"PROXY "):
                    if b"\n" not in buf:
                        continue
                    line, buf = buf.split(b"\n", 1)
                    parts = line.decode(errors="replace").split()
                    if len(parts) >= 6:
                        rec["proxy"] = (parts[2], int(parts[4]))
                header_done = True
            if mode in ("silent", "partial-greeting"):
                continue
            if in_data and mode in ("close-mid-data", "reset-mid-data") and buf:
                return self._close(rec, reset=(mode == "reset-mid-data"))
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if in_data:
                    if line.rstrip(b"\r") == b".":
                        in_data = False
                        if mode == "close-at-dot":
                            return self._close(rec)
                        if mode == "stall-at-dot":
                            continue
                        with self.lock:
                            rec["messages"].append(message)
                        message = b""
                        self._send(rec, f"250 2.0.0 Ok: queued as S{len(rec['messages'])}")
                    else:
                        message += line + b"\n"
                    continue
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    self._send(rec, "250-scripted.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 50000000")
                elif verb == b"DATA":
                    in_data = True
                    message = b""
                    self._send(rec, "354 End data with <CR><LF>.<CR><LF>")
                    if mode in ("close-mid-data", "reset-mid-data") and buf:
                        return self._close(rec, reset=(mode == "reset-mid-data"))
                elif verb == b"QUIT":
                    self._send(rec, "221 2.0.0 Bye")
                    if mode == "half-close-after-quit":
                        self._half_close(rec)
                        continue
                    if not rec["half_closed"]:
                        return self._close(rec)
                elif verb.startswith(b"XSMTPSCREEN"):
                    self._send(rec, "502 5.5.2 Error: command not recognized")
                else:
                    self._send(rec, "250 2.0.0 Ok")

    def messages(self):
        with self.lock:
            return [m for rec in self.connections for m in rec["messages"]]

    def wait_connections(self, n, timeout=5):
        return wait_until(lambda: len(self.connections) >= n, timeout,
                          what=f"{n} connection(s) to the scripted backend on port {self.port}")

    def wait_closed(self, index, timeout=10):
        """The record of connection index once the proxy's side of it has ended."""
        rec = self.wait_connections(index + 1, timeout) and self.connections[index]
        wait_until(lambda: rec["closed"], timeout, what=f"the scripted backend to read the proxy's EOF "
                                                        f"on connection {index}")
        return rec

    def stop(self):
        """Stops listening and closes every connection (a backend that dies)."""
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
            self.socks = []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(2)


def scripted_backend(env, mode="smtp", **kw):
    """A ScriptedBackend stopped when the test ends (kw: greeting, port, half_close_after)."""
    b = ScriptedBackend(mode, **kw)
    env.add_cleanup(b.stop)
    return b


# --------------------------------------------------------------------------------------
# A sink backend in its own process (for the soak test): asyncio SMTP after a PROXY v2
# header; for each message it appends "<marker> <src>:<sport>" to the record file and
# only then answers 250, so every 250 a client saw is on file even if the sink is then
# SIGKILLed. The marker is the message's "X-Soak-Marker:" header.

_SINK_CODE = r'''
import asyncio, os, re, signal, struct, sys
port, record = int(sys.argv[1]), sys.argv[2]
fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_MESSAGE = 1 << 20

async def session(reader, writer):
    src = "?"
    try:
        head = await reader.readexactly(16)
        if not head.startswith(SIG):
            writer.close(); return
        (length,) = struct.unpack("!H", head[14:16])
        body = await reader.readexactly(length)
        if head[13] == 0x11 and length >= 12:
            src = "%d.%d.%d.%d:%d" % (*body[0:4], struct.unpack("!H", body[8:10])[0])
        writer.write(b"220 sink.test ESMTP\r\n")
        while True:
            line = await reader.readuntil(b"\n")
            verb = line.strip().split(b" ", 1)[0].upper() if line.strip() else b""
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                size, marker, too_big = 0, None, False
                while True:
                    l = await reader.readuntil(b"\n")
                    if l in (b".\r\n", b".\n"):
                        break
                    size += len(l)
                    too_big = too_big or size > MAX_MESSAGE
                    if marker is None:
                        m = re.match(rb"X-Soak-Marker: (\S+)", l)
                        if m:
                            marker = m.group(1).decode()
                if too_big:
                    writer.write(b"552 5.3.4 Message too big\r\n")
                else:
                    os.write(fd, ("%s %s\n" % (marker or "-", src)).encode())
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"EHLO":
                writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass

async def main():
    server = await asyncio.start_server(session, "127.0.0.1", port, backlog=4096, reuse_address=True,
                                        limit=1 << 16)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()

asyncio.run(main())
'''


class SinkProcess:
    """The sink backend above, as a child process on 127.0.0.1:port. kill() is SIGKILL
    (by PID); start() again restarts it on the same port; records() reads the file."""

    def __init__(self, env, name="sink"):
        self.env = env
        self.dir = os.path.join(env.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.record_path = os.path.join(self.dir, "accepted.txt")
        self.log_path = os.path.join(self.dir, "sink.log")
        self.proc = None
        self.starts = 0
        env.add_cleanup(self.stop)
        env.add_log(f"sink log ({name})", self.log_path)

    def start(self, timeout=10):
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK_CODE, str(self.port), self.record_path],
                                     stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.starts += 1

        def ready():
            if self.proc.poll() is not None:
                raise Failure(f"the sink exited with {self.proc.returncode}: {_read(self.log_path)}")
            return port_listening("127.0.0.1", self.port)
        wait_until(ready, timeout, what=f"the sink listening on 127.0.0.1:{self.port}")
        log(f"sink pid {self.proc.pid} on 127.0.0.1:{self.port} (start {self.starts})")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        terminate(self.proc)

    def records(self):
        """[(marker, "src:port")] in the order the sink accepted them."""
        out = []
        for line in _read(self.record_path).splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((parts[0], parts[1]))
        return out

# <<< hostile/fault/limits/soak helpers (issue 6) <<<


def deep_clients(screen, sources, timeout=15):
    """Like deep_client for several source addresses at once: all connect together, so
    their greet waits overlap (one greet.wait for the lot). Returns the SmtpClients, each
    past smtpscreen's own final 220."""
    gw = duration_seconds(screen.settings.get("greet.wait", "6s"))
    banner = screen.settings.get("greet.banner", "")
    clients = [SmtpClient(screen.port, source=s, timeout=timeout) for s in sources]
    for c in clients:
        first = c.read_line(timeout=gw + 5)
        check(first.startswith("220-") and c.elapsed() < 1.0,
              f"deep-tested client [{c.source}]: '220-...' must come at once, got {first!r} after {c.elapsed():.2f}s")
    for c in clients:
        rest = c.read_reply(timeout=gw + 10)
        check(rest.code == 220 and rest.final == f"220 {banner}",
              f"deep-tested client [{c.source}]: the final greeting line must be smtpscreen's own "
              f"'220 {banner}', got {rest.text!r}")
        check(c.elapsed() >= gw - 0.15, f"[{c.source}]: final 220 before greet.wait ({gw}s) ended")
    return clients
