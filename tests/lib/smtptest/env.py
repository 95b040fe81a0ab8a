"""One test's world and its runner: run(main) gives main a fresh temporary directory
(Env) and a watchdog, and stops every process the test started, by PID, whatever
happens. Exit status: 0 pass, 1 fail, 77 skip."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from .checks import Failure, SKIP_EXIT, Skip, log, tail
from .dns import Rbldnsd
from .haproxy import Haproxy
from .postfix import Postfix
from .processes import read_text
from .redis_server import RedisServer
from .smtpscreen import SANITIZER_REPORT, Smtpscreen

__all__ = ["Env", "run", "reexec_in_private_mount_namespace", "bind_resolv_conf"]


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

    def redis(self, start=True, **kw):
        r = RedisServer(self, **kw)
        self.add_log(f"{r.name} log", r.log_path)
        return r.start() if start else r

    def haproxy(self, servers, start=True, **kw):
        """HAProxy from conf/haproxy.cfg in front of servers [(name, smtpscreen)]."""
        h = Haproxy(self, servers, **kw)
        self.add_log(f"{h.name} log", h.log_path)
        return h.start() if start else h

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
                              f"{tail(s.log_text(), 60)}")

    def dump_logs(self, lines=60):
        for title, path in self._logs:
            text = read_text(path)
            print(f"----- {title}: {path} -----")
            print(tail(text, lines) if text else "    (empty)")

    def cleanup(self):
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up
                print(f"cleanup error: {e!r}")


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


def reexec_in_private_mount_namespace():
    """Runs this test again in a mount namespace of its own (unshare -m, private
    propagation), once, so that bind_resolv_conf changes what this test and the programs
    it starts (a Postfix master and the policy servers it spawns) see as /etc/resolv.conf,
    and nothing else on the host. Call before run; without root nothing happens (the test
    then skips as usual)."""
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
