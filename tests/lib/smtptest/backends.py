"""Backends that are not a real MTA: ScriptedBackend (in a thread: answers like an MTA
or misbehaves on cue, and records what it got) and SinkProcess (a sink in its own
process, which can be SIGKILLed)."""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

from .checks import Failure, log, wait_until
from .ports import free_port, port_listening
from .processes import read_text, terminate
from .proxy_protocol import PROXY_V2_SIGNATURE, parse_proxy_v2

__all__ = ["ScriptedBackend", "scripted_backend", "SinkProcess"]


def close_socket(s, reset=False):
    """Ends s with a FIN (shutdown first, which also wakes a thread blocked in its recv)
    or, with reset, an RST (SO_LINGER 0)."""
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


class ScriptedBackend:
    """An SMTP backend on loopback (host, 127.0.0.1 by default) that misbehaves on cue.
    mode:
      smtp              220, 250 to everything (PIPELINING offered), 354 to DATA, 250
                        after the end of data (message recorded), 221 to QUIT; XCLIENT
                        is answered with the greeting, as Postfix does
      refuse-xclient    like smtp with offers_xclient, but answers XCLIENT with 550 5.7.0
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
    offers_xclient: its EHLO reply offers XCLIENT (smtpscreen's handoff = xclient sends
    XCLIENT only to a backend that does).
    reply_delay: seconds the backend waits before each reply after its greeting (a slow
    backend: a long pipelined batch keeps it answering for a while).
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
                 half_close_after=None, offers_xclient=False, reply_delay=0.0):
        self.mode, self.greeting, self.host, self.port = mode, greeting, host, port
        self.reply_delay = reply_delay
        self.offers_xclient = offers_xclient or mode == "refuse-xclient"
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
        ln = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
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
        if self.reply_delay and rec["replies"] > 0:
            time.sleep(self.reply_delay)
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
        close_socket(rec["sock"], reset)
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
                    xclient = "250-XCLIENT ADDR PORT NAME HELO PROTO\r\n" if self.offers_xclient else ""
                    self._send(rec, f"250-scripted.test\r\n250-PIPELINING\r\n{xclient}250-8BITMIME\r\n"
                                    "250 SIZE 50000000")
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
                elif verb == b"XCLIENT":
                    self._send(rec, "550 5.7.0 Error: insufficient authorization" if mode == "refuse-xclient"
                               else self.greeting)
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
            close_socket(s)
        for t in self.threads:
            t.join(2)


def scripted_backend(env, mode="smtp", **kw):
    """A ScriptedBackend stopped when the test ends (kw: greeting, port, host,
    half_close_after, offers_xclient)."""
    b = ScriptedBackend(mode, **kw)
    env.add_cleanup(b.stop)
    return b


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
                raise Failure(f"the sink exited with {self.proc.returncode}: {read_text(self.log_path)}")
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
        for line in read_text(self.record_path).splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((parts[0], parts[1]))
        return out
