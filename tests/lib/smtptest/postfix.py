"""A private Postfix instance (postfix -c DIR) on loopback ports, never the system
one: its configuration, start and stop by PID, its log and its Maildir."""

import os
import re
import signal
import subprocess
import time

from .checks import Failure, Skip, check, log, tail, wait_until
from .ports import free_ports, port_listening
from .postfix_services import INTERNAL_SERVICES
from .processes import pid_alive, read_text, which

__all__ = ["Postfix", "postfix_tls_main", "TlsPostfix", "tls_postfix",
           "postfix_client_regex", "postfix_queued_ids", "abort_postfix"]


class Postfix:
    """A private Postfix (postfix -c DIR) on 127.0.0.1 with three smtpd ports:
         proxy_port    smtpd_upstream_proxy_protocol = haproxy
         xclient_port  smtpd_authorized_xclient_hosts = <xclient_hosts>
         plain_port    nothing special (for controls)
    mynetworks = 127.0.0.1/32; mail for example.test goes to a Maildir (virtual(8));
    everything else is relayed only for mynetworks."""

    def __init__(self, env, name="postfix", xclient_hosts="127.0.0.1/32",
                 bare_newline="reject", main_extra=None, inet_protocols="all", master_extra=""):
        self.env = env
        self.base = os.path.join(env.dir, name)
        self.config_dir = os.path.join(self.base, "etc")
        self.queue_dir = os.path.join(self.base, "queue")
        self.data_dir = os.path.join(self.base, "data")
        self.mail_base = os.path.join(self.base, "mail")
        self.maildir = os.path.join(self.mail_base, "inbox")
        self.maillog = os.path.join(self.base, "maillog")
        self.xclient_hosts = xclient_hosts
        self.bare_newline = bare_newline
        self.main_extra = dict(main_extra or {})
        self.inet_protocols = inet_protocols
        self.master_extra = master_extra  # more master.cf lines (a policy service, ...)
        self.proxy_port, self.xclient_port, self.plain_port = free_ports(3)
        self.master_pid = None
        self.postfix = which("postfix")
        self.postconf = which("postconf")

    def _supports(self, parameter):
        out = subprocess.run([self.postconf, "-d", parameter], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.startswith(parameter)

    def _write_config(self):
        import pwd
        import grp
        try:
            vuser = pwd.getpwnam("nobody")
            vuid, vgid = vuser.pw_uid, vuser.pw_gid
        except KeyError:
            vuid, vgid = 65534, 65534
        try:
            pf = pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            raise Skip("the postfix user or the postdrop group is missing (postfix not installed?)")
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.mail_base):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        os.chown(self.mail_base, vuid, vgid)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "backend.test",
            "mydomain": "test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": self.inet_protocols,
            "mynetworks": "127.0.0.1/32",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "virtual_mailbox_domains": "example.test",
            "virtual_mailbox_base": self.mail_base,
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": f"static:{vuid}",
            "virtual_gid_maps": f"static:{vgid}",
            "virtual_minimum_uid": "1",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_peername_lookup": "no",
            "smtpd_client_port_logging": "yes",
            "smtp_dns_support_level": "disabled",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.base,
            "syslog_name": "postfix-it",
        }
        if self.bare_newline and self._supports("smtpd_forbid_bare_newline"):
            main["smtpd_forbid_bare_newline"] = self.bare_newline
            main["smtpd_forbid_bare_newline_exclusions"] = ""
        main.update(self.main_extra)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            for k, v in main.items():
                f.write(f"{k} = {v}\n")
        # chroot is "n" everywhere: a chroot would need copies of /etc files in the queue.
        master = f"""\
127.0.0.1:{self.proxy_port} inet n - n - - smtpd
  -o syslog_name=postfix-it/proxy
  -o smtpd_upstream_proxy_protocol=haproxy
127.0.0.1:{self.xclient_port} inet n - n - - smtpd
  -o syslog_name=postfix-it/xclient
  -o smtpd_authorized_xclient_hosts={self.xclient_hosts}
127.0.0.1:{self.plain_port} inet n - n - - smtpd
  -o syslog_name=postfix-it/plain
""" + INTERNAL_SERVICES + self.master_extra
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(master)

    def _run(self, *args, timeout=60):
        cmd = [self.postfix, "-c", self.config_dir] + list(args)
        env = dict(os.environ, MAIL_CONFIG=self.config_dir)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    def start(self):
        if os.geteuid() != 0:
            raise Skip("a private Postfix instance needs root (postfix -c DIR start)")
        self._write_config()
        # The postfix command reports errors on stderr only to a terminal; the details
        # go to maillog_file, which is what we show.
        r = self._run("check")
        if r.returncode != 0:
            raise Failure(f"postfix -c {self.config_dir} check failed (rc {r.returncode}):\n"
                          f"{r.stdout}{r.stderr}{self.log()}")
        for attempt in range(3):
            r = self._run("start")
            if r.returncode == 0:
                break
            # free_ports() cannot reserve the ports: a test running beside this one may have
            # taken one of ours since. Take new ones and start again.
            if "Address already in use" not in self.log() or attempt == 2:
                raise Failure(f"postfix -c {self.config_dir} start failed (rc {r.returncode}):\n"
                              f"{r.stdout}{r.stderr}{self.log()}")
            log(f"postfix {self.config_dir}: a port was taken before master bound it; new ports")
            self._run("stop")
            self.proxy_port, self.xclient_port, self.plain_port = free_ports(3)
            self._write_config()
        pid_file = os.path.join(self.queue_dir, "pid", "master.pid")
        pid_text = wait_until(lambda: read_text(pid_file).strip(), 10, what=f"{pid_file}")
        self.master_pid = int(pid_text)
        self.env.add_cleanup(self.stop)
        for port in (self.proxy_port, self.xclient_port, self.plain_port):
            wait_until(lambda: port_listening("127.0.0.1", port), 10,
                       what=f"private Postfix listening on 127.0.0.1:{port}")
        log(f"postfix {self.config_dir}: master pid {self.master_pid}, proxy port "
            f"{self.proxy_port}, xclient port {self.xclient_port} ({self.xclient_hosts}), "
            f"plain port {self.plain_port}")
        return self

    def stop(self):
        if self.master_pid is None:
            return
        pid, self.master_pid = self.master_pid, None
        try:
            self._run("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            log(f"postfix master {pid} still alive after stop: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self):
        return read_text(self.maillog)

    def wait_for_log(self, regex, timeout=10):
        return wait_until(lambda: re.search(regex, self.log(), re.M), timeout,
                          what=f"/{regex}/ in the Postfix log {self.maillog}")

    def messages(self):
        """[(path, text)] of every message in the Maildir (new/ and cur/)."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for n in names:
                p = os.path.join(d, n)
                out.append((p, read_text(p)))
        return out

    def delivered(self, marker):
        return [text for _, text in self.messages() if marker in text]

    def wait_for_delivery(self, marker, timeout=15):
        """The text of the message containing marker, once virtual(8) has delivered it."""
        try:
            found = wait_until(lambda: self.delivered(marker), timeout, 0.1,
                               what=f"delivery of {marker!r} to {self.maildir}")
        except Failure as e:
            raise Failure(f"{e}\nPostfix log:\n{tail(self.log(), 30)}") from None
        return found[0]

    def check_not_delivered(self, marker, wait=1.5):
        """Waits a little (the queue is fast here) and fails if marker was delivered."""
        time.sleep(wait)
        check(not self.delivered(marker), f"message {marker!r} must never arrive, but it did")


def postfix_tls_main(cert, loglevel=1):
    """main_extra for env.postfix(): Postfix's smtpd offers STARTTLS with cert (a
    ServerCert), logs its TLS handshakes (smtpd_tls_loglevel) and records the TLS
    protocol and cipher in the Received header (smtpd_tls_received_header)."""
    return {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert.cert,
        "smtpd_tls_key_file": cert.key,
        "smtpd_tls_loglevel": str(loglevel),
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_session_cache_database": "",
    }


class TlsPostfix(Postfix):
    """A private Postfix whose smtpd ports offer STARTTLS with cert (a ServerCert): the
    settings of postfix_tls_main, plus tlsmgr(8) in master.cf (without it smtpd logs "no
    entropy for TLS key generation: disabling TLS support"). Otherwise as Postfix."""

    def __init__(self, env, cert, loglevel=1, **kw):
        main_extra = postfix_tls_main(cert, loglevel)
        main_extra.update(kw.pop("main_extra", None) or {})
        super().__init__(env, main_extra=main_extra, **kw)
        self.cert = cert

    def _write_config(self):
        super()._write_config()
        with open(os.path.join(self.config_dir, "master.cf"), "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")


def tls_postfix(env, cert, start=True, **kw):
    """env.postfix() with STARTTLS on every smtpd port (TlsPostfix)."""
    name = kw.pop("name", f"postfix{len(env._postfixes) or ''}")
    pf = TlsPostfix(env, cert, name=name, **kw)
    env._postfixes.append(pf)
    env.add_log(f"Postfix log ({name})", pf.maillog)
    return pf.start() if start else pf


def postfix_client_regex(ip, port=None):
    """How Postfix (smtpd_client_port_logging = yes) names the client in its log."""
    p = rf":{port}\b" if port is not None else ""
    return rf"client=unknown\[{re.escape(ip)}\]{p}"


def postfix_queued_ids(postfix):
    """Queue ids of every message Postfix's qmgr took into the active queue (one per
    message actually accepted), in log order."""
    return re.findall(r"qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, size=\d+", postfix.log())


def abort_postfix(postfix):
    """'postfix abort' on a private Postfix: every process is told to stop at once, which
    kills the sessions in flight (a backend crash); postfix.start() brings it back."""
    pid = postfix.master_pid
    if pid is None:
        return
    postfix._run("abort", timeout=30)
    wait_until(lambda: not pid_alive(pid), 15, what="postfix abort")
    postfix.master_pid = None
