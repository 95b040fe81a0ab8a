"""Programs and processes: finding a program, stopping a child by its PID, and reading
a process's memory, CPU time and descriptors from /proc."""

import os
import shutil
import subprocess
import threading
import time

from .checks import Skip

__all__ = ["ChildProcess", "pid_alive", "which", "need_programs", "terminate", "user_exists", "read_text",
           "CLK_TCK", "proc_status_kib", "rss_mib", "cpu_split", "cpu_seconds", "sched_seconds", "open_fd_count",
           "set_open_files_limit", "raise_own_open_files", "RssSampler"]


class ChildProcess:
    """What every helper that runs one program as self.proc (a Popen, None before its
    start) answers: its PID and whether it still runs."""

    proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None


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


def which(name):
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not path:
        raise Skip(f"{name} is not installed (scripts/install-deps installs it)")
    return path


def need_programs(*names):
    for name in names:
        if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            raise Skip(f"{name} is not installed (scripts/install-deps installs it)")


def terminate(proc, grace=5):
    """SIGTERM a child we started, SIGKILL it if it is still there after grace seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def user_exists(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def read_text(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


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


def cpu_split(pid):
    """(user, system) CPU seconds of pid so far, all its threads (/proc/PID/stat fields
    14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid):
    """User + system CPU time of pid so far."""
    return sum(cpu_split(pid))


def sched_seconds(pid):
    """(on a CPU, waiting for a CPU) seconds summed over pid's threads, from
    /proc/PID/task/*/schedstat. The waiting time tells a slow process from one that
    others kept off its core (a small shared machine)."""
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
