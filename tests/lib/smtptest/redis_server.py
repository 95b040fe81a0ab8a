"""A real redis-server for one test: on 127.0.0.1 with an ephemeral port (and, on
request, a unix socket) in the test's directory, started and stopped by PID; frozen
(SIGSTOP) and thawed, killed and started again on the same port; its keys and its
command counters read with a small RESP client of our own (standard library only)."""

import os
import signal
import socket
import subprocess

from .checks import Failure, log, tail, wait_until
from .ports import free_port
from .processes import ChildProcess, pid_alive, read_text, which

__all__ = ["RedisServer", "RedisError", "redis_command"]


class RedisError(Exception):
    """Redis answered a command with an error reply (-ERR ...)."""


def _encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection in the middle of a reply")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection in the middle of a reply")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        """One RESP2 reply: str (simple), int, bytes or None (bulk), list (array);
        an error reply raises RedisError."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise Failure(f"not a RESP reply line from redis: {line!r}")


def redis_command(address, *args, password=None, db=None, timeout=2.0):
    """Runs one command on a fresh connection to address ((host, port) or a unix socket
    path), after AUTH and SELECT when given, and returns its reply."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        reader = _Reader(sock)
        if password is not None:
            sock.sendall(_encode(["AUTH", password]))
            reader.reply()
        if db is not None:
            sock.sendall(_encode(["SELECT", db]))
            reader.reply()
        sock.sendall(_encode(list(args)))
        return reader.reply()
    finally:
        sock.close()


class RedisServer(ChildProcess):
    """redis-server on 127.0.0.1:<free port> with no persistence (a kill loses every
    key, as a restarted cache server may), its files in <env.dir>/<name>/; unix=True
    adds a unix socket there too (.unix_path); password sets requirepass. env: anything
    with .dir and add_cleanup(fn) (an Env or the bench's). preexec_fn: run in the child
    before exec (the bench pins it to a CPU)."""

    def __init__(self, env, name="redis", unix=False, password=None, preexec_fn=None, also_v6=False):
        self.env = env
        # Listening on [::1] too (where the host has it), on the same port: for a client
        # that names the server `localhost`, which may resolve to ::1 first.
        self.also_v6 = also_v6
        self.name = name
        self.dir = os.path.join(env.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.unix_path = os.path.join(self.dir, "redis.sock") if unix else None
        self.password = password
        self.preexec_fn = preexec_fn
        self.config_path = os.path.join(self.dir, "redis.conf")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.exe = which("redis-server")
        self.proc = None
        self.frozen = False
        self.starts = 0

    # ------------------------------------------------------------------ lifetime

    def _write_config(self):
        lines = [
            "bind 127.0.0.1" + (" -::1" if self.also_v6 else ""),  # '-': skipped where ::1 is missing
            f"port {self.port}",
            "daemonize no",
            f"dir {self.dir}",
            'logfile ""',            # stdout, which is our log file
            'save ""',               # no snapshots: a killed server comes back empty
            "appendonly no",
            "databases 16",
        ]
        if self.unix_path:
            lines += [f"unixsocket {self.unix_path}", "unixsocketperm 700"]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10):
        """Starts (or starts again, on the same port and socket) and waits for PONG."""
        if self.running():
            raise Failure(f"{self.name}: start() while pid {self.proc.pid} still runs")
        self._write_config()
        logf = open(self.log_path, "a" if self.starts else "w")
        if self.starts:
            logf.write(f"----- restart {self.starts} -----\n")
            logf.flush()
        self.proc = subprocess.Popen([self.exe, self.config_path], stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir, preexec_fn=self.preexec_fn)
        logf.close()
        self.frozen = False
        if self.starts == 0:
            self.env.add_cleanup(self.stop)
        self.starts += 1

        def answers():
            if self.proc.poll() is not None:
                raise Failure(f"{self.name} exited with {self.proc.returncode} at start:\n"
                              f"{tail(read_text(self.log_path), 20)}")
            try:
                return self.command("PING", timeout=0.5) == "PONG"
            except (OSError, ConnectionError, RedisError):
                return False

        wait_until(answers, timeout, what=f"{self.name} answering PING on 127.0.0.1:{self.port}")
        log(f"{self.name} pid {self.proc.pid} on 127.0.0.1:{self.port}"
            + (f" and {self.unix_path}" if self.unix_path else ""))
        return self

    def freeze(self):
        """SIGSTOP: connections stay open and nothing is answered (a hung server)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True
        log(f"{self.name} pid {self.proc.pid} frozen (SIGSTOP)")

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False
        log(f"{self.name} pid {self.proc.pid} thawed (SIGCONT)")

    def kill(self):
        """SIGKILL (works on a frozen server too): its clients see their connections reset."""
        if not self.running():
            return
        pid = self.proc.pid
        self.proc.kill()
        self.proc.wait(10)
        self.frozen = False
        wait_until(lambda: not pid_alive(pid), 5, what=f"{self.name} pid {pid} gone")
        log(f"{self.name} pid {pid} killed (SIGKILL)")

    def restart(self):
        """Kills the server if it still runs and starts a new one on the same port."""
        self.kill()
        return self.start()

    def stop(self):
        """SIGTERM by PID (a frozen server is thawed first, or it would not act on it),
        SIGKILL when it lingers."""
        if not self.running():
            return
        if self.frozen:
            self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()

    # ------------------------------------------------------------------ reading it

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def command(self, *args, db=None, timeout=2.0):
        return redis_command(self.address, *args, password=self.password, db=db, timeout=timeout)

    def keys(self, pattern="*", db=None):
        """Every key matching pattern, as str, sorted (a test's Redis holds a few)."""
        return sorted(k.decode() for k in self.command("KEYS", pattern, db=db))

    def info(self, section):
        """INFO section as {field: value (str)}; commandstats rows stay "calls=...,usec=..."."""
        text = self.command("INFO", section).decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and ":" in line:
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def command_calls(self):
        """{command name: calls} from INFO commandstats (since start or CONFIG RESETSTAT)."""
        out = {}
        for k, v in self.info("commandstats").items():
            if k.startswith("cmdstat_"):
                fields = dict(f.split("=", 1) for f in v.split(","))
                out[k[len("cmdstat_"):]] = int(fields["calls"])
        return out

    def total_commands_processed(self):
        return int(self.info("stats")["total_commands_processed"])

    def log_text(self):
        return read_text(self.log_path)

    def cache_settings(self, use_unix=False, **extra):
        """smtpscreen settings for cache.backend = redis on this server (TCP, or its unix
        socket with use_unix), plus extra {"cache.redis_db": ...}."""
        if use_unix and not self.unix_path:
            raise Failure(f"{self.name} was started without a unix socket")
        s = {"cache.backend": "redis", "cache.path": None,
             "cache.redis": self.unix_path if use_unix else f"127.0.0.1:{self.port}"}
        if self.password is not None:
            s["cache.redis_password"] = self.password
        s.update(extra)
        return s
