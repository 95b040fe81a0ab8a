"""The bench's loopback world: rbldnsd with a test zone, Postfix's smtp-sink as the
backend MTA, and smtpscreen in front of it, each in one temporary directory on
ephemeral ports. Used by bench/run-bench and bench/instructions (Python 3 stdlib only).
Ports, rbldnsd, /proc figures and the INI writer are the test library's
(tests/lib/smtptest/), the same the integration tests use.

Every process is started here and stopped here, by PID, whatever happens.
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

# What the library raises when a step fails is the bench's error too.
from smtptest.checks import Failure as BenchError, Skip, wait_until  # noqa: E402
from smtptest.dns import Rbldnsd  # noqa: E402
from smtptest.ports import free_port, port_listening  # noqa: E402
from smtptest.processes import terminate  # noqa: E402
from smtptest.smtpscreen import ini_text  # noqa: E402

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


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_binaries(build_dir=None):
    """(smtpscreen, smtpload) from build_dir, or from the first of build-bench/, build/
    that has both."""
    # Absolute: smtpscreen runs in the bench's temporary directory.
    candidates = [os.path.abspath(build_dir)] if build_dir else [os.path.join(ROOT, d) for d in ("build-bench", "build")]
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
        terminate(self.proc, grace)
        return self.proc.returncode

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
    """Waits for predicate; BenchError when proc exits first or after timeout seconds."""
    def ready():
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_tail()}")
        return predicate()
    wait_until(ready, timeout, what=what)


def listening(port):
    """True when a socket listens on 127.0.0.1's port (from /proc/net: no connection made,
    so nothing shows in the server's counters or logs)."""
    return port_listening("127.0.0.1", port)


class BenchEnv:
    """Owns the temporary directory and every process of one bench run."""

    def __init__(self, smtpscreen_bin, keep=False, cache="lmdb"):
        self.smtpscreen_bin = smtpscreen_bin
        self.keep = keep
        self.cache = cache
        self.dir = tempfile.mkdtemp(prefix="smtpscreen-bench-")
        os.chmod(self.dir, 0o755)  # rbldnsd and smtp-sink drop privileges and still read here
        self.procs = []
        self.cleanups = []  # stops of what the library started (rbldnsd)
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

    def add_cleanup(self, fn):
        self.cleanups.append(fn)

    def close(self):
        for p in reversed(self.procs):
            p.stop(grace=5)
        self.procs.clear()
        while self.cleanups:
            self.cleanups.pop()()
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
        # TTL an hour: a cached DNSBL pass outlasts the whole run.
        dns = Rbldnsd(self, {ZONE: ZONE_LINES}, name=name, host=address, port=port, ttl=3600,
                      preexec_fn=pin_to(self.client_cpus))
        try:
            dns.start()
        except Skip as e:
            raise BenchError(str(e)) from None
        if port is None:
            self.dns_port = dns.port
        return dns

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
