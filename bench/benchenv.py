"""The bench's loopback world: rbldnsd with a test zone, Postfix's smtp-sink as the
backend MTA, and smtpscreen in front of it, each in one temporary directory on
ephemeral ports. Used by bench/run-bench and bench/instructions (Python 3 stdlib only).

Every process is started here and stopped here, by PID, whatever happens.
"""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Source address plan (smtpload binds each session to one of these; see README):
CLEAN_SOURCES = "127.1.0.0/22"     # clean clients, warmed into the cache (PASS OLD)
DNSBL_SOURCES = "127.2.0.0/16"     # listed in bl.test
PREGREET_SOURCES = "127.3.0.0/16"  # bots that talk first
IDLE_SOURCES = "127.4.0.0/16"      # idle holders (65,534 addresses, one connection each)

ZONE = "bl.test"
ZONE_LINES = [
    ":127.0.0.2:Listed in bl.test (smtpscreen bench)",
    DNSBL_SOURCES,
    "127.0.0.2",   # smtpload's default --dnsbl-sources
    "127.0.0.10",
]


class BenchError(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_binaries(build_dir=None):
    """(smtpscreen, smtpload) from build_dir, or from the first of build-bench/, build/
    that has both."""
    candidates = [build_dir] if build_dir else [os.path.join(ROOT, d) for d in ("build-bench", "build")]
    for d in candidates:
        screen = os.path.join(d, "smtpscreen")
        load = os.path.join(d, "bench", "smtpload")
        if os.access(screen, os.X_OK) and os.access(load, os.X_OK):
            return screen, load
    raise BenchError(f"no smtpscreen and bench/smtpload in {', '.join(candidates)}: "
                     "run `meson setup build-bench && ninja -C build-bench` first")


def raise_fd_limit(want=1 << 20):
    """Idle holders need a descriptor each, in smtpload and in smtpscreen (children
    inherit the limit). root may raise the hard limit up to fs.nr_open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = min(want, int(f.read()))
    except OSError:
        pass
    for target in ((want, want), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, target)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port(udp_too=False):
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise BenchError("no free port")


def listening(port):
    """True when a socket listens on the port (from /proc/net/tcp: no connection made,
    so nothing shows in the server's counters or logs)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def proc_cpu_split(pid):
    """(user, system) CPU seconds of the whole process, all threads (/proc/PID/stat
    utime and stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def proc_cpu_seconds(pid):
    return sum(proc_cpu_split(pid))


def proc_sched_seconds(pid):
    """(on CPU, waiting for a CPU) seconds summed over the process's threads, from
    /proc/PID/task/*/schedstat. The waiting time tells a slow server from a server that
    another program kept off its core (the bench shares a small machine)."""
    run = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue  # the thread ended
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def proc_status_kb(pid, key):
    """VmRSS / VmHWM ... in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def proc_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def dns_answers(port, name, timeout=0.3, host="127.0.0.1"):
    """One A query over UDP to host:port; True when any reply comes back."""
    qid = os.getpid() & 0xFFFF
    q = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (host, port))
        try:
            return len(s.recv(512)) > 12
        except OSError:
            return False


class Process:
    """One child: started with its output in a file, stopped by PID."""

    def __init__(self, name, cmd, log_path, cwd=None, cpus=None):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        logf = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd, preexec_fn=pin_to(cpus))
        logf.close()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=10):
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def pin_to(cpus):
    """A preexec_fn that binds the child (and every thread it will start) to cpus."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def wait_for(what, predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_tail()}")
        if predicate():
            return
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout}s waiting for {what}")


def ini_text(settings):
    sections = {}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"{name} = {value}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n\n" for s, lines in sections.items())


class BenchEnv:
    """Owns the temporary directory and every process of one bench run."""

    def __init__(self, smtpscreen_bin, keep=False, cache="lmdb"):
        self.smtpscreen_bin = smtpscreen_bin
        self.keep = keep
        self.cache = cache
        self.dir = tempfile.mkdtemp(prefix="smtpscreen-bench-")
        os.chmod(self.dir, 0o755)  # rbldnsd and smtp-sink drop privileges and still read here
        self.procs = []
        self.dns_port = None
        self.sink_port = None
        self.sink = None
        self.screen = None
        self.screen_port = free_port()
        self.screen_starts = 0
        # CPU sets (None: any CPU): smtpscreen on its own core, everything else (load
        # generator, sink, DNS) on the other, when the caller asks for it.
        self.client_cpus = None
        self.screen_cpus = None

    # ------------------------------------------------------------------ lifetime

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for p in reversed(self.procs):
            p.stop(grace=5)
        self.procs.clear()
        if self.keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _start(self, name, cmd, cwd=None, cpus=None):
        p = Process(name, cmd, os.path.join(self.dir, f"{name}.log"), cwd=cwd, cpus=cpus)
        self.procs.append(p)
        return p

    def _forget(self, proc):
        if proc in self.procs:
            self.procs.remove(proc)

    # ------------------------------------------------------------------ DNS and backend

    def start_rbldnsd(self, address="127.0.0.1", port=None, name="rbldnsd"):
        """rbldnsd with the bl.test zone on address:port (default: 127.0.0.1 on a free
        port, which becomes self.dns_port). postscreen_env starts a second one on port 53."""
        exe = shutil.which("rbldnsd")
        if not exe:
            raise BenchError("rbldnsd not found (apt-get install rbldnsd)")
        zdir = os.path.join(self.dir, "zones")
        os.makedirs(zdir, exist_ok=True)
        os.chmod(zdir, 0o755)
        zfile = os.path.join(zdir, "bl.zone")
        with open(zfile, "w") as f:
            f.write("\n".join(ZONE_LINES) + "\n")
        os.chmod(zfile, 0o644)
        if port is None:
            port = self.dns_port = free_port(udp_too=True)
        # -t: answers live an hour, so a cached DNSBL pass outlasts the whole run.
        cmd = [exe, "-n", "-b", f"{address}/{port}", "-w", zdir, "-t", "3600", "-c", "1h"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += [f"{ZONE}:ip4set:bl.zone"]
        p = self._start(name, cmd, cpus=self.client_cpus)
        wait_for(name, lambda: dns_answers(port, "2.0.0.127." + ZONE, host=address), 10, p)
        return p

    def start_sink(self, max_sessions=8000):
        exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not os.access(exe, os.X_OK):
            raise BenchError("smtp-sink not found (it comes with Postfix)")
        self.sink_port = free_port()
        # -m: smtp-sink handles 256 sessions at once by default; c=500 direct would queue.
        cmd = [exe]
        if os.geteuid() == 0:
            cmd += ["-u", "postfix"]
        cmd += ["-m", str(max_sessions), f"127.0.0.1:{self.sink_port}", "4096"]
        p = self._start("smtp-sink", cmd, cpus=self.client_cpus)
        wait_for("smtp-sink", lambda: listening(self.sink_port), 10, p)
        self.sink = p
        return p

    # ------------------------------------------------------------------ smtpscreen

    def screen_settings(self, overrides=None):
        s = {
            "listen.address": f"127.0.0.1:{self.screen_port}",
            "backend.address": f"127.0.0.1:{self.sink_port}",
            # smtp-sink reads no PROXY header and answers XCLIENT with 250 instead of
            # Postfix's 220 greeting, so the sink runs announce nothing (README).
            "backend.handoff": "none",
            "backend.i_know_this_is_an_open_relay": "yes",
            "backend.connect_timeout": "5s",
            "greet.banner": "screen.bench.test ESMTP",
            "greet.wait": "1s",
            "greet.action": "drop",
            "dnsbl.sites": f"{ZONE}=127.0.0.[2..20]*1",
            "dnsbl.servers": f"127.0.0.1:{self.dns_port}",
            "dnsbl.action": "drop",
            "dnsbl.timeout": "3s",
            "cache.backend": self.cache,
            "cache.path": os.path.join(self.dir, "cache.lmdb"),
            # A warmed pass must last the whole run.
            "cache.dnsbl_min_ttl": "1h",
            "cache.dnsbl_max_ttl": "1h",
            "limits.max_connections": "100000",
            "limits.per_client_connections": "1000",
            "limits.shutdown_grace": "2s",
            "log.syslog": "off",
            "log.stderr": "on",
        }
        for k, v in (overrides or {}).items():
            if v is None:
                s.pop(k, None)
            else:
                s[k] = v
        return s

    def start_screen(self, overrides=None, wrapper=None, name=None, pinned=True):
        """(Re)starts smtpscreen with the bench settings plus overrides; wrapper is a
        command prefix (valgrind ...); pinned: on self.screen_cpus."""
        self.stop_screen()
        self.screen_starts += 1
        name = name or f"smtpscreen-{self.screen_starts}"
        conf = os.path.join(self.dir, f"{name}.ini")
        with open(conf, "w") as f:
            f.write(ini_text(self.screen_settings(overrides)))
        cmd = list(wrapper or []) + [self.smtpscreen_bin, "-c", conf]
        self.screen = self._start(name, cmd, cwd=self.dir, cpus=self.screen_cpus if pinned else None)
        wait_for("smtpscreen listening", lambda: listening(self.screen_port), 120 if wrapper else 15, self.screen)
        return self.screen

    def stop_screen(self):
        if self.screen is None:
            return None
        rc = self.screen.stop(grace=60)
        self._forget(self.screen)
        self.screen = None
        return rc

    def screen_log_count(self, needle):
        n = 0
        with open(self.screen.log_path, errors="replace") as f:
            for line in f:
                if needle in line:
                    n += 1
        return n
