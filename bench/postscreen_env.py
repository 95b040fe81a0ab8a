"""The bench's third contender: Postfix's postscreen(8) in a private Postfix instance,
with the same screening settings as smtpscreen's bench configuration, in front of the
same smtp-sink (smtpd forwards every message with smtpd_proxy_filter before queueing).
Used by bench/run-bench (Python 3 stdlib only). Needs root and Postfix.

The instance lives in the bench's temporary directory: its own config_directory (main.cf
and master.cf written here), queue_directory and data_directory. The master runs in the
foreground as one process that the bench stops by PID. It starts inside a private mount
namespace in which /etc/resolv.conf is a bind mount of a file that names a second
rbldnsd on 127.53.0.1:53, because dnsblog(8) uses the libc resolver, which reads
/etc/resolv.conf and always asks port 53. The machine's /etc/resolv.conf is untouched.

    unshare --mount --propagation private \\
        sh -c 'mount --bind TMP/resolv.conf /etc/resolv.conf && exec master -c DIR'

unshare (without --fork) and sh both exec, so the Popen's PID is the master's PID.
The master calls setsid() at start (it is not given -i, which would need PID 1), so on
SIGTERM it signals its own process group, which is every Postfix child. stop() then waits for that session to empty and SIGKILLs, by PID,
whatever is left of it.
"""

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

import benchenv as be  # puts tests/lib on sys.path
from smtptest.ports import free_port, port_listening  # noqa: E402
from smtptest.postfix_services import INTERNAL_SERVICES  # noqa: E402
from benchenv import log

POSTFIX = "/usr/sbin/postfix"
DAEMON_DIR = "/usr/lib/postfix/sbin"
WORKLOADS = ("clean-c50", "clean-c500", "pregreet-drop", "dnsbl-drop", "idle-hold", "postfix-c50")


def unavailable():
    """None when the postscreen legs can run here, else why not (one line)."""
    if os.geteuid() != 0:
        return "not root (a private Postfix instance needs root)"
    postfix = shutil.which("postfix") or POSTFIX
    daemon_dir = postfix_daemon_dir()
    for exe in (postfix, os.path.join(daemon_dir, "master"), os.path.join(daemon_dir, "postscreen"),
                os.path.join(daemon_dir, "dnsblog"), os.path.join(daemon_dir, "smtpd")):
        if not os.access(exe, os.X_OK):
            return f"{exe} not found (apt-get install postfix)"
    if not shutil.which("unshare") or not shutil.which("mount"):
        return "unshare(1) or mount(8) not found (util-linux)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or the postdrop group is missing"
    return None


def postfix_version():
    postconf = shutil.which("postconf")
    if postconf:
        r = subprocess.run([postconf, "-dh", "mail_version"], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip()
    return "?"


def postfix_daemon_dir():
    postconf = shutil.which("postconf")
    if postconf:
        r = subprocess.run([postconf, "-dh", "daemon_directory"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return DAEMON_DIR


# ---------------------------------------------------------------------------------- /proc


def _stat(pid):
    """(ppid, pgrp, session, utime, stime, cutime, cstime) in ticks, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[11]), int(fields[12]),
            int(fields[13]), int(fields[14]))


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _all_stats():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                out[int(name)] = st
    return out


def tree(root):
    """{pid: stat} of root and all its live descendants."""
    stats = _all_stats()
    if root not in stats:
        return {}
    children = {}
    for pid, st in stats.items():
        children.setdefault(st[0], []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        out[pid] = stats[pid]
        todo += children.get(pid, [])
    return out


def tree_cpu_split(root):
    """(user, system) CPU seconds of root and every live descendant, plus the children
    they have reaped (cutime/cstime: every smtpd that reached max_use and exited, every
    dnsblog that went idle). Sampled before and after a leg; the difference is the leg's
    cost to the whole Postfix instance."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for st in tree(root).values():
        user += st[3] + st[5]
        system += st[4] + st[6]
    return user / ticks, system / ticks


def session_members(sid):
    """PIDs whose session is sid (the master's, after its setsid())."""
    return [pid for pid, st in _all_stats().items() if st[2] == sid]


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------- master


class PostfixMaster(be.Process):
    """The master, started through unshare + sh that both exec, so self.pid is the master.
    stop(): SIGTERM (the master passes it on to its process group), then SIGKILL by PID to
    whatever of its session is still there."""

    def stop(self, grace=10):
        sid = self.pid
        rc = super().stop(grace)
        deadline = time.monotonic() + grace
        left = session_members(sid)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = session_members(sid)
        if left:
            log(f"postfix master {sid} gone, {len(left)} of its processes were not: SIGKILL {left[:10]}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return rc


# ---------------------------------------------------------------------------------- instance


class PostscreenWorld:
    """What every postscreen instance of a bench run shares: the second rbldnsd on port 53
    and the resolv.conf that points at it. One instance per workload (instance())."""

    def __init__(self, env):
        self.env = env
        self.daemon_dir = postfix_daemon_dir()
        self.postfix = shutil.which("postfix") or POSTFIX
        self.dns_address = None
        self.resolv_conf = os.path.join(env.dir, "resolv.conf")

    def start_dns(self):
        """A second rbldnsd with the same bl.test zone on 127.53.0.1:53 (or the first free
        127.53.N.1), named by self.resolv_conf."""
        for n in range(0, 50):
            address = f"127.53.{n}.1"
            if _port_free(address, 53):
                break
        else:
            raise be.BenchError("no free 127.53.N.1:53 for postscreen's DNS server")
        self.env.start_rbldnsd(address=address, port=53, name="rbldnsd-postscreen")
        self.dns_address = address
        with open(self.resolv_conf, "w") as f:
            # One server, short timeout: as smtpscreen's dnsbl.timeout, a slow answer must not
            # hold a dnsblog process for the libc default of 5 s x 2 attempts.
            f.write(f"nameserver {address}\noptions timeout:3 attempts:1\n")
        os.chmod(self.resolv_conf, 0o644)
        log(f"postscreen's DNS: rbldnsd on {address}:53, {self.resolv_conf} bind-mounted on "
            "/etc/resolv.conf in the Postfix instance's mount namespace")

    def instance(self, name, sink_port, cpus=None):
        return PostscreenInstance(self, name, sink_port, cpus)


def _port_free(address, port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


class PostscreenInstance:
    """One private Postfix instance: postscreen on 127.0.0.1:port, smtpd behind it with
    smtpd_proxy_filter to the sink, dnsblog for the DNSBL queries."""

    def __init__(self, world, name, sink_port, cpus=None):
        self.world = world
        self.env = world.env
        self.name = name
        self.sink_port = sink_port
        self.cpus = cpus
        self.base = os.path.join(self.env.dir, name)
        self.config_dir = os.path.join(self.base, "etc")
        self.queue_dir = os.path.join(self.base, "queue")
        self.data_dir = os.path.join(self.base, "data")
        self.maillog = os.path.join(self.base, "postfix.log")
        self.port = free_port()
        # Plain smtpd listeners in the same instance: the MTA alone (the direct legs of
        # the postfix-* workloads), and the same smtpd behind smtpscreen (PROXY v2).
        self.smtpd_port = free_port()
        self.smtpd_proxy_port = free_port()
        self.master = None
        self.starts = 0
        self.log_offset = 0  # where the current start's lines begin in maillog

    # ------------------------------------------------------------------ config

    def main_cf(self, greet_wait):
        return {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postscreen.bench.test",
            "mydomain": "bench.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "",
            # Every accepted message goes to the same smtp-sink as the other legs, before
            # it is queued: smtpd returns the sink's reply to the client.
            "smtpd_proxy_filter": f"127.0.0.1:{self.sink_port}",
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            "smtp_dns_support_level": "disabled",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.base,
            "syslog_name": "postfix-bench",
            # smtpd processes (one per client handed over) must not be the limit at c=500.
            "default_process_limit": "1000",
            "smtpd_client_connection_count_limit": "0",
            # The screening settings of smtpscreen's bench config (benchenv.screen_settings).
            # The default access list is permit_mynetworks, which would allowlist every
            # 127/8 client and skip every test.
            "postscreen_access_list": "",
            "postscreen_greet_action": "drop",
            "postscreen_greet_wait": greet_wait,
            "postscreen_dnsbl_action": "drop",
            "postscreen_dnsbl_sites": f"{be.ZONE}=127.0.0.[2..20]*1",
            "postscreen_dnsbl_threshold": "1",
            "postscreen_dnsbl_timeout": "3s",
            "postscreen_cache_map": "btree:$data_directory/psc_cache",
            # As cache.dnsbl_min_ttl = cache.dnsbl_max_ttl = 1h: a warmed pass outlasts the run.
            "postscreen_dnsbl_min_ttl": "1h",
            "postscreen_dnsbl_max_ttl": "1h",
            # Raised so that neither c=500 nor 20,000 idle holders are refused with 421.
            "postscreen_pre_queue_limit": "100000",
            "postscreen_post_queue_limit": "100000",
            "postscreen_client_connection_count_limit": "1000",
        }

    def master_cf(self):
        # chroot is "n" everywhere: a chroot would need copies of /etc files in the queue.
        return f"""\
127.0.0.1:{self.port} inet n - n - 1 postscreen
127.0.0.1:{self.smtpd_port} inet n - n - - smtpd
127.0.0.1:{self.smtpd_proxy_port} inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy
smtpd     pass  -       -       n       -       -       smtpd
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
""" + INTERNAL_SERVICES

    def write_config(self, greet_wait):
        pf = pwd.getpwnam("postfix")
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            for k, v in self.main_cf(greet_wait).items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(self.master_cf())

    def postfix(self, *args, timeout=60):
        cmd = [self.world.postfix, "-c", self.config_dir] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, MAIL_CONFIG=self.config_dir))
        if r.returncode != 0:
            raise be.BenchError(f"{' '.join(cmd)} failed (rc {r.returncode}):\n{r.stdout}{r.stderr}"
                                f"{self.log_tail()}")
        return r

    # ------------------------------------------------------------------ lifetime

    def start(self, greet_wait="1s"):
        """(Re)starts the master with postscreen_greet_wait = greet_wait. The data
        directory (postscreen's cache) survives a restart."""
        self.stop()
        self.write_config(greet_wait)
        # check creates the queue directories and sets their owners and modes.
        self.postfix("check")
        try:
            self.log_offset = os.path.getsize(self.maillog)
        except OSError:
            self.log_offset = 0
        self.starts += 1
        master = os.path.join(self.world.daemon_dir, "master")
        script = (f"mount --bind {self.world.resolv_conf} /etc/resolv.conf && "
                  f"exec {master} -c {self.config_dir}")
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        p = PostfixMaster(f"{self.name}-master-{self.starts}", cmd,
                          os.path.join(self.base, f"master-{self.starts}.log"), cpus=self.cpus)
        self.env.procs.append(p)
        self.master = p
        be.wait_for(f"postscreen ({self.name}) listening on 127.0.0.1:{self.port}",
                    lambda: port_listening("127.0.0.1", self.port) and _comm(p.pid) == "master", 20, p)
        return p

    def stop(self):
        if self.master is None:
            return None
        rc = self.master.stop(grace=15)
        self.env._forget(self.master)
        self.master = None
        return rc

    def alive(self):
        return self.master is not None and self.master.alive()

    # ------------------------------------------------------------------ measures

    @property
    def pid(self):
        return self.master.pid

    def cpu_split(self):
        return tree_cpu_split(self.master.pid)

    def processes(self):
        """{comm: count} of the master's live descendants."""
        out = {}
        for pid in tree(self.master.pid):
            if pid != self.master.pid:
                c = _comm(pid) or "?"
                out[c] = out.get(c, 0) + 1
        return out

    def pss_kb(self):
        """Proportional set size of the whole instance (shared pages split between the
        processes that share them), KiB."""
        return sum(pss_kb(pid) for pid in tree(self.master.pid))

    def postscreen_pid(self, wait=5):
        """The postscreen process: master starts it at the first connection."""
        deadline = time.monotonic() + wait
        while True:
            for pid in tree(self.master.pid):
                if _comm(pid) == "postscreen":
                    return pid
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def log_text(self):
        try:
            with open(self.maillog, errors="replace") as f:
                f.seek(self.log_offset)
                return f.read()
        except OSError:
            return ""

    def log_count(self, needle):
        return sum(1 for line in self.log_text().splitlines() if needle in line)

    def log_tail(self, lines=20):
        return "".join(self.log_text().splitlines(True)[-lines:])

    def dns_trouble(self):
        """(DNS timeouts, lookup errors) in this start's log: postscreen's 'dnsblog reply
        timeout' warnings, and dnsblog's failed lookups."""
        text = self.log_text()
        return (text.count("dnsblog reply timeout"), text.count("lookup error"))
