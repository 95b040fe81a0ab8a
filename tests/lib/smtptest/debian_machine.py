"""A throwaway Debian 12 machine booted by a real systemd (test_debian_package installs
the .deb there).

The host needs no systemd running: the machine is a minbase root with systemd 252
(built once by mmdebstrap and cached, like the unpacked Exim), booted with systemd as
pid 1 of its own pid, mount, network, UTS, IPC and cgroup namespaces:

    timeout LIMIT unshare --mount -- bash boot.sh          (the test's own mount namespace)
        tmpfs + overlay: the cached root stays untouched; every write lands in a tmpfs
        chroot apt-get: fetch the package's Depends (host network, before the boot)
        a cgroup2 directory of its own under the test's cgroup
        unshare --pid --fork --kill-child --cgroup --net --uts --ipc
            /proc, /sys (read-only), cgroup2, a /dev with the usual devices
            exec chroot ROOT /lib/systemd/systemd   (container=..., as systemd-nspawn does)

Commands run inside with nsenter into all of its namespaces. The machine has a network
namespace of its own with only `lo`, so its port 25 is its own and nothing it listens
on is reachable from the host. Every mount lives in the test's mount namespace and goes
with it; systemd ends with its pid namespace when the boot script or the `timeout`
around it ends (--kill-child), and the boot script removes its cgroup."""

import fcntl
import os
import re
import shlex
import signal
import subprocess
import time

from .checks import Failure, check, fail, log, tail, wait_until
from .processes import read_text, which

__all__ = ["DEBIAN_ROOT_CACHE", "DebianRootBuild", "BootedDebian"]

DEBIAN_ROOT_CACHE = os.environ.get("SMTPSCREEN_DEBIAN_ROOT_CACHE", "/var/cache/smtpscreen-tests/bookworm-systemd")
# What the cached root holds beyond minbase; bump RECIPE when this or the build changes.
ROOT_INCLUDE = "systemd,systemd-sysv"
ROOT_RECIPE = "1"
# Apt settings copied from the host when it sets them (a snapshot mirror whose Release
# files are past Valid-Until needs the first two; a proxy the others).
HOST_APT_KEYS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date", "Acquire::http::Proxy",
                 "Acquire::https::Proxy")
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What `systemctl is-system-running` answers once the boot has ended, well or not.
BOOTED_STATES = ("running", "degraded", "maintenance", "stopping")


def _host_apt_options():
    options = []
    for key in HOST_APT_KEYS:
        r = subprocess.run(["apt-config", "shell", "V", key], capture_output=True, text=True, timeout=30)
        value = r.stdout.strip()
        if value.startswith("V='") and value.endswith("'") and len(value) > 4:
            options.append(f'{key} "{value[3:-1]}";')
    return options


class DebianRootBuild:
    """The cached Debian 12 minbase root with systemd: ready at once when the cache holds
    it, otherwise built by mmdebstrap in the background (several minutes and the
    mirror), so that the caller can build its package meanwhile."""

    def __init__(self, env, cache=DEBIAN_ROOT_CACHE):
        self.cache = cache
        self.done_file = cache + ".done"
        self.log_path = os.path.join(env.dir, "mmdebstrap.log")
        self.proc = None
        self._lock = None
        env.add_cleanup(self.stop)
        if self._ready():
            return
        mmdebstrap = which("mmdebstrap")
        which("unshare")
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        # Two suites on one machine build it once: the second waits for the first.
        self._lock = open(cache + ".lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        if self._ready():
            self._unlock()
            return
        partial = cache + ".partial"
        subprocess.run(["rm", "-rf", "--one-file-system", partial, cache], check=True, timeout=120)
        args = ["--mode=root", "--variant=minbase", f"--include={ROOT_INCLUDE}",
                # the package lists stay, so that an offline run can still resolve Depends
                "--skip=cleanup/apt/lists"]
        args += [f"--aptopt={o}" for o in _host_apt_options()]
        log(f"building the Debian 12 root for the boot test into {cache} (mmdebstrap, log: {self.log_path})")
        self._log = open(self.log_path, "w")
        # In a mount and pid namespace of its own: whatever it mounts or starts ends with it.
        self.proc = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
                                      mmdebstrap, *args, "bookworm", partial],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        env.add_log("mmdebstrap", self.log_path)

    def _ready(self):
        try:
            with open(self.done_file) as f:
                return f.readline().strip() == f"recipe {ROOT_RECIPE} {ROOT_INCLUDE}" and os.path.isdir(self.cache)
        except OSError:
            return False

    def _unlock(self):
        if self._lock:
            self._lock.close()
            self._lock = None

    def wait(self, timeout):
        """Path of the finished root; fails with the end of mmdebstrap's log."""
        if self.proc is None:
            return self.cache
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail(f"mmdebstrap did not finish in {timeout}s (log: {self.log_path})")
        self._log.close()
        with open(self.log_path) as f:
            text = f.read()
        check(rc == 0, f"mmdebstrap failed ({rc}):\n{tail(text, 20)}")
        partial = self.cache + ".partial"
        # The build hides service starts from its own installs; the booted machine must not.
        check(not os.path.exists(os.path.join(partial, "usr/sbin/policy-rc.d")),
              "the new root has a policy-rc.d, which would stop the package's units from starting")
        os.rename(partial, self.cache)
        took = re.search(r"^I: success in ([\d.]+) seconds", text, re.M)
        took = f"{float(took.group(1)):.0f}s" if took else "?"
        with open(self.done_file, "w") as f:
            f.write(f"recipe {ROOT_RECIPE} {ROOT_INCLUDE}\nbuilt by mmdebstrap in {took}\n")
        log(f"root built by mmdebstrap in {took}")
        self.proc = None
        self._unlock()
        return self.cache

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)   # its own session: unshare and mmdebstrap
            self.proc.wait(30)
            subprocess.run(["rm", "-rf", "--one-file-system", self.cache + ".partial"], timeout=120)
        self._unlock()


# Runs in the test's own mount namespace (unshare --mount); see the module's docstring.
BOOT_SCRIPT = r"""
set -u
lower=$1 work=$2 deb=$3 cgroup_of_test=$4
root=$work/root layer=$work/layer cgmnt=$work/cgroup
say() { printf 'boot.sh: %s\n' "$*"; }
mkdir -p "$root" "$layer" "$cgmnt"
mount -t tmpfs -o mode=0755,size=1g tmpfs "$layer" && mkdir "$layer/upper" "$layer/work" &&
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$layer/upper,workdir=$layer/work" "$root" ||
  { say "cannot mount the throwaway root"; exit 70; }

# Before the boot, with the host's network: the package and its Depends go into the
# machine's apt cache (the host's apt cache first, the mirror for the rest).
rm -f "$root/etc/resolv.conf" && cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/root/" || exit 71
pkg=/root/$(basename "$deb")
apt_in_root() {   # SECONDS ARGS...
  timeout "$1" chroot "$root" env -i PATH=__PATH__ DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 apt-get "${@:2}"
}
apt_in_root 180 -q update || say "apt-get update failed: the package lists of the cached root are used"
apt_in_root 60 -qq --print-uris install "$pkg" | while read -r uri file size hash; do
  [ -f "/var/cache/apt/archives/$file" ] && cp "/var/cache/apt/archives/$file" "$root/var/cache/apt/archives/" &&
    say "from the host's apt cache: $file"
done
apt_in_root 300 -q -y --download-only install "$pkg" || { say "cannot fetch the package's Depends"; exit 72; }

# The machine's cgroup tree is a directory of its own under the test's cgroup: pid 1
# moves itself there, then enters a cgroup namespace rooted at it.
mount -t cgroup2 cgroup2 "$cgmnt" && cg=$cgmnt$cgroup_of_test/smtpscreen-boot-$$ && mkdir "$cg" ||
  { say "cannot make a cgroup under $cgmnt$cgroup_of_test"; exit 73; }

unshare --pid --fork --kill-child --net --uts --ipc -- /bin/bash -c '
  root=$1 cg=$2
  echo $$ >"$cg/cgroup.procs" || exit 74
  mount -t proc -o nosuid,nodev,noexec proc "$root/proc" &&
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys" &&
    mount -t tmpfs -o mode=0755,size=16m,nosuid tmpfs "$root/dev" || exit 74
  for node in null zero full random urandom tty; do
    : >"$root/dev/$node" && mount --bind "/dev/$node" "$root/dev/$node" || exit 74
  done
  # systemd writes its status lines to the console and makes it root:tty 0620: a file on
  # the machine tmpfs takes them, as a bind of the host /dev/null changed the host node
  : >"$root/dev/console" || exit 74
  mkdir -p "$root/dev/pts" "$root/dev/shm" && ln -s pts/ptmx "$root/dev/ptmx" &&
    ln -s /proc/self/fd "$root/dev/fd" || exit 74
  exec unshare --cgroup -- /bin/bash -c "
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 \"\$1/sys/fs/cgroup\" || exit 74
    exec env -i container=smtpscreen-test TERM=dumb /usr/sbin/chroot \"\$1\" /lib/systemd/systemd
  " systemd "$root"
' boot "$root" "$cg" &
inner=$!
echo "$inner" >"$work/inner.pid"
wait "$inner"
rc=$?
say "systemd ended with status $rc"
find "$cg" -depth -type d -exec rmdir {} + && say "removed the cgroup $cg"
exit "$rc"
""".replace("__PATH__", MACHINE_PATH)


def _own_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip().rstrip("/")
    fail("this process has no cgroup2 entry in /proc/self/cgroup")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class BootedDebian:
    """A Debian 12 machine from `root`, with `deb` in its apt cache, booted by systemd."""

    def __init__(self, env, root, deb, limit):
        self.env = env
        self.work = os.path.join(env.dir, "machine")
        os.makedirs(self.work)
        self.log_path = os.path.join(self.work, "boot.log")
        self.deb_in_machine = "/root/" + os.path.basename(deb)
        self.pid1 = None
        script = os.path.join(self.work, "boot.sh")
        with open(script, "w") as f:
            f.write(BOOT_SCRIPT)
        self._log = open(self.log_path, "w")
        env.add_log("boot script", self.log_path)
        # timeout ends the whole thing even if this test is killed; its process group
        # holds the boot script and the inner unshare, whose end ends systemd.
        self.proc = subprocess.Popen(["timeout", "-k", "5", str(limit), "unshare", "--mount", "--",
                                      "/bin/bash", script, root, self.work, deb, _own_cgroup()],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        env.add_cleanup(self.destroy)

    def wait_booted(self, timeout):
        """Waits for pid 1 and for the end of its boot; returns `systemctl is-system-running`."""
        deadline = time.monotonic() + timeout
        inner_pid_file = os.path.join(self.work, "inner.pid")
        own_ns = os.readlink("/proc/self/ns/pid")

        def pid1():
            if self.proc.poll() is not None:
                fail(f"the boot script ended ({self.proc.returncode}) before systemd ran:\n"
                     f"{tail(read_text(self.log_path), 20)}")
            try:
                with open(inner_pid_file) as f:
                    inner = int(f.read())
            except (OSError, ValueError):
                return None
            for child in _children(inner):
                try:
                    with open(f"/proc/{child}/comm") as f:
                        if f.read().strip() == "systemd" and os.readlink(f"/proc/{child}/ns/pid") != own_ns:
                            return child
                except OSError:
                    pass
            return None
        self.pid1 = wait_until(pid1, timeout, interval=0.2, what="systemd as pid 1 of the machine")
        self.env.add_log("the machine's journal", os.path.join(self.work, "journal.txt"))
        # systemctl answers "offline" while pid 1 has not opened its private socket yet,
        # and "initializing"/"starting" during the boot; `--wait` gives up at once (an
        # empty answer) when it cannot reach pid 1, so the state is polled instead.
        answers = []

        def settled():
            if not os.path.exists(f"/proc/{self.pid1}"):
                fail(f"systemd (host pid {self.pid1}) ended during the boot; systemctl said {answers[-3:]}")
            r = self.run("systemctl", "is-system-running", timeout=30)
            state = r.stdout.strip()
            if not answers or answers[-1][1] != state:
                answers.append((round(time.monotonic() - started, 1), state, r.stderr.strip()[-200:]))
            return state if state in BOOTED_STATES else None
        started = time.monotonic()
        try:
            return wait_until(settled, max(5, deadline - time.monotonic()), interval=0.5,
                              what="the machine's boot to end")
        except Failure as e:
            fail(f"{e}; systemctl is-system-running said, in turn (seconds, answer, stderr): {answers}")

    def run(self, *cmd, timeout=60, input=None):
        """cmd inside the machine, as root, with a clean environment; returns the result."""
        check(self.pid1, "the machine is not running")
        full = ["nsenter", "--target", str(self.pid1), "--mount", "--uts", "--ipc", "--net", "--pid",
                "--cgroup", "--root", "--wd", "--", "/usr/bin/env", "-i", f"PATH={MACHINE_PATH}", "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive", *cmd]
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            fail(f"`{shlex.join(cmd)}` in the machine took more than {timeout}s")

    def must(self, *cmd, timeout=60):
        r = self.run(*cmd, timeout=timeout)
        check(r.returncode == 0, f"`{shlex.join(cmd)}` in the machine failed ({r.returncode}):\n"
                                 f"{tail(r.stdout + r.stderr, 30)}")
        return r.stdout

    def write_file(self, path, text):
        self.must("mkdir", "-p", os.path.dirname(path))
        r = self.run("/bin/sh", "-c", f"cat >{shlex.quote(path)}", input=text)
        check(r.returncode == 0, f"cannot write {path} in the machine: {r.stderr}")

    def in_netns(self, *cmd, timeout=30):
        """cmd from the host's file system, in the machine's network namespace only (the
        host's python3 can then talk to the machine's loopback)."""
        return subprocess.run(["nsenter", "--target", str(self.pid1), "--net", "--", *cmd], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def save_journal(self):
        if self.pid1 and self.proc.poll() is None:
            r = self.run("journalctl", "-b", "--no-pager", "-o", "short-monotonic", timeout=30)
            with open(os.path.join(self.work, "journal.txt"), "w") as f:
                f.write(r.stdout + r.stderr)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # A failing check gets the journal in its report (the logs are printed before
        # the cleanup that powers the machine off).
        if exc_type is not None:
            self.save_journal()
        return False

    def poweroff(self, timeout=60):
        """systemctl poweroff; True once the machine is gone the way a powered-off
        container goes: its systemd's final reboot(RB_POWER_OFF) ends the pid namespace as
        if pid 1 had been killed by SIGINT (reboot(2)), so unshare ends with 128+2."""
        self.save_journal()
        self.run("systemctl", "poweroff", timeout=30)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail(f"the machine did not power off within {timeout}s")
        self.pid1 = None
        return rc == 128 + signal.SIGINT

    def destroy(self):
        """Whatever happened: systemd and everything in its namespace end (SIGKILL to its
        pid 1), then the boot script removes the cgroup and ends."""
        if self.proc.poll() is None:
            try:
                self.save_journal()
            except Exception as e:  # the journal is a help, not a condition
                print(f"no journal: {e!r}")
            if self.pid1 and os.path.exists(f"/proc/{self.pid1}"):
                os.kill(self.pid1, signal.SIGKILL)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
