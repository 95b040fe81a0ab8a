"""A real HAProxy in front of smtpscreen instances, run from the shipped example
conf/haproxy.cfg with the test's loopback ports; its servers' health-check state read
from its stats socket."""

import os
import re
import socket
import subprocess

from .checks import Failure, log, tail, wait_until
from .ports import free_port, port_listening
from .processes import ChildProcess, read_text, terminate, user_exists, which
from .smtpscreen import SOURCE_ROOT

__all__ = ["EXAMPLE_HAPROXY_CFG", "BEHIND_HAPROXY", "render_haproxy_config", "Haproxy"]


EXAMPLE_HAPROXY_CFG = os.path.join(SOURCE_ROOT, "conf", "haproxy.cfg")

# What each smtpscreen behind the example needs (the example's own header says so):
# HAProxy connects from 127.0.0.1 in the tests.
BEHIND_HAPROXY = {"listen.proxy_protocol": "v2", "listen.proxy_from": "127.0.0.1/32"}


def render_haproxy_config(example_text, port, servers, run_dir, keep_privileges=True):
    """The example with only what a test must change:
      bind ...            -> bind 127.0.0.1:<port>
      server lines        -> one per (name, port) in servers, each with the options of
                             the example's first server line
      log <target> ...    -> log stdout (the test keeps HAProxy's log in a file)
      stats socket <path> -> a socket in run_dir
      chroot/user/group   -> kept when keep_privileges (root and a haproxy user), dropped otherwise
    Fails when one of those lines is missing, so the example cannot drift from what
    the tests run."""
    out, seen, server_options = [], set(), None
    for line in example_text.splitlines():
        stripped = line.strip()
        indent = line[:len(line) - len(line.lstrip())]
        word = stripped.split()[0] if stripped and not stripped.startswith("#") else ""
        if word == "bind":
            out.append(f"{indent}bind 127.0.0.1:{port}")
        elif word == "server":
            fields = stripped.split()
            if server_options is None:
                server_options = " ".join(fields[3:])
                for name, sport in servers:
                    out.append(f"{indent}server {name} 127.0.0.1:{sport} {server_options}")
        elif word == "log" and stripped != "log global":
            out.append(f"{indent}log stdout format raw local0 info")
        elif word == "stats" and stripped.split()[1] == "socket":
            out.append(f"{indent}stats socket {os.path.join(run_dir, 'admin.sock')} mode 600 level admin")
        elif word in ("chroot", "user", "group"):
            if keep_privileges:
                out.append(line)
        else:
            out.append(line)
            continue
        seen.add("stats socket" if word == "stats" else word)
    missing = {"bind", "server", "log", "stats socket"} - seen
    if missing:
        raise Failure(f"{EXAMPLE_HAPROXY_CFG} has no {', '.join(sorted(missing))} line to adapt for the test")
    return "\n".join(out) + "\n"


class Haproxy(ChildProcess):
    """haproxy -db (foreground) from the rendered example, on 127.0.0.1:<free port>, in
    front of servers [(name, smtpscreen)]; started and stopped by PID. Its log (one
    line per connection, server state changes) is the test's. env: anything with .dir
    and add_cleanup(fn) (an Env or the bench's); preexec_fn: run in the child before
    exec (the bench pins it to a CPU)."""

    def __init__(self, env, servers, name="haproxy", example=EXAMPLE_HAPROXY_CFG, preexec_fn=None):
        self.env = env
        self.name = name
        self.dir = os.path.join(env.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.exe = which("haproxy")
        self.port = free_port()
        self.servers = [(n, s.port if hasattr(s, "port") else int(s)) for n, s in servers]
        self.example = example
        self.preexec_fn = preexec_fn
        self.config_path = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.stats_socket = os.path.join(self.dir, "admin.sock")
        self.proc = None

    def config_text(self):
        keep = (os.geteuid() == 0 and user_exists("haproxy") and os.path.isdir("/var/lib/haproxy"))
        return render_haproxy_config(read_text(self.example), self.port, self.servers, self.dir, keep)

    def check_config(self, path):
        """haproxy -c: the file parses and is valid (the example itself or the rendered one)."""
        r = subprocess.run([self.exe, "-c", "-f", path], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Failure(f"haproxy -c -f {path} refuses it ({r.returncode}):\n{r.stdout}{r.stderr}")

    def start(self, timeout=10):
        with open(self.config_path, "w") as f:
            f.write(self.config_text())
        self.check_config(self.config_path)
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.exe, "-db", "-f", self.config_path], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
                                     preexec_fn=self.preexec_fn)
        logf.close()
        self.env.add_cleanup(self.stop)

        def ready():
            if self.proc.poll() is not None:
                raise Failure(f"haproxy exited with {self.proc.returncode} at start:\n{tail(self.log_text(), 30)}")
            return port_listening("127.0.0.1", self.port) and os.path.exists(self.stats_socket)

        wait_until(ready, timeout, what=f"haproxy listening on 127.0.0.1:{self.port}")
        log(f"haproxy pid {self.proc.pid} on 127.0.0.1:{self.port} in front of "
            + ", ".join(f"{n} (:{p})" for n, p in self.servers))
        return self

    def stop(self):
        terminate(self.proc)

    def log_text(self):
        return read_text(self.log_path)

    def admin(self, command, timeout=5):
        """One command on the stats socket; its whole answer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.stats_socket)
            s.sendall(command.encode() + b"\n")
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        return got.decode(errors="replace")

    def server_stats(self):
        """{server name: {csv field: value}} of the backend's servers (`show stat`):
        status (UP/DOWN), check_status (L7OK...), chkfail, chkdown, scur, stot..."""
        text = self.admin("show stat")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines or not lines[0].startswith("# "):
            raise Failure(f"haproxy `show stat` answered {text[:200]!r}")
        fields = lines[0][2:].split(",")
        names = {n for n, _ in self.servers}
        out = {}
        for ln in lines[1:]:
            row = dict(zip(fields, ln.split(",")))
            if row.get("svname") in names:
                out[row["svname"]] = row
        return out

    def wait_servers_up(self, timeout=20):
        """Until every server is UP with a passed check (L7OK: the whole tcp-check
        dialogue went as the example expects)."""
        def all_up():
            stats = self.server_stats()
            return all(stats.get(n, {}).get("status") == "UP" and stats[n].get("check_status") == "L7OK"
                       for n, _ in self.servers) and stats
        try:
            return wait_until(all_up, timeout, 0.2, what="every haproxy server UP with check L7OK")
        except Failure as e:
            raise Failure(f"{e}: {self.describe_servers()}\nhaproxy log:\n{tail(self.log_text(), 20)}") from None

    def describe_servers(self):
        stats = self.server_stats()
        return "; ".join(f"{n}: {r.get('status')} check {r.get('check_status')} ({r.get('last_chk', '')!r}), "
                         f"chkfail {r.get('chkfail')}, chkdown {r.get('chkdown')}" for n, r in sorted(stats.items()))

    def chosen_servers(self):
        """The server names of the per-connection log lines (option tcplog), in order."""
        backend = None
        for ln in read_text(self.config_path).splitlines():
            m = re.match(r"\s*backend\s+(\S+)", ln)
            if m:
                backend = m.group(1)
        return re.findall(rf" {re.escape(backend)}/(\S+) ", self.log_text()) if backend else []
