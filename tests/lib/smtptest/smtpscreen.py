"""smtpscreen under test: the binary, an INI written from {"section.key": value},
the process started, signalled and stopped by PID, and its log."""

import os
import re
import signal
import subprocess
import sys

from .checks import Failure, check, check_no_search, log, tail, wait_until
from .ports import free_port, port_listening
from .processes import ChildProcess, read_text

__all__ = ["SOURCE_ROOT", "find_smtpscreen", "SECTION_ORDER", "Smtpscreen",
           "run_smtpscreen", "ini_text", "ini_keys", "duration_seconds",
           "is_sanitized_binary", "bound_asan_quarantine", "SANITIZER_REPORT"]


# The source tree this package sits in (tests/lib/smtptest/).
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def find_smtpscreen():
    """The binary under test: $SMTPSCREEN (meson sets it), else the first build*/ that has one."""
    exe = os.environ.get("SMTPSCREEN")
    if exe:
        return os.path.abspath(exe)
    for build in ("build", "build-it", "build-asan"):
        candidate = os.path.join(SOURCE_ROOT, build, "smtpscreen")
        if os.access(candidate, os.X_OK):
            return candidate
    raise Failure("SMTPSCREEN is not set and no build*/smtpscreen exists")


# smtpscreen.ini(5)'s order of the sections (smtpscreen --list-keys).
SECTION_ORDER = ["listen", "backend", "greet", "dnsbl", "deep", "access", "cache", "tls",
                 "limits", "smuggling", "log", "stats", "process"]


class Smtpscreen(ChildProcess):
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
        return read_text(self.config_path)

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
                                      f"log:\n{tail(self.log_text(), 40)}")
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
                                   f"log:\n{tail(self.log_text(), 40)}")
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
        return read_text(self.log_path)

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
                              f"log:\n{tail(self.log_text(), 40)}")
            return re.search(regex, self.log_text()[since:], re.M)
        try:
            return wait_until(look, timeout, what=f"/{regex}/ in the {self.name} log")
        except Failure as e:
            if "timed out" in str(e):
                raise Failure(f"{e}; log:\n{tail(self.log_text(), 40)}") from None
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
    out = ["# written by tests/lib/smtptest/smtpscreen.py"]
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
    """Seconds of an INI duration ("6s", "300ms", "5m"); 30 for what it cannot read."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|[smhd]?)\s*", text)
    if not m:
        return 30
    if m.group(2) == "ms":
        return int(m.group(1)) / 1000
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


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


SANITIZER_REPORT = (r"ERROR: AddressSanitizer.*|ERROR: LeakSanitizer.*|runtime error: .*"
                    r"|SUMMARY: (Address|Undefined|Leak)Sanitizer.*")
