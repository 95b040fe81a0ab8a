"""A private Exim 4.96 (Debian's exim4-daemon-heavy, unpacked: the package conflicts
with postfix) as a sending or a receiving MTA."""

import os
import re
import shutil
import subprocess
import time

from .checks import Failure, Skip, check, log, tail, wait_until
from .ports import free_port, port_listening
from .processes import read_text, terminate, user_exists
from .smtp_client import message_text

__all__ = ["EXIM_CACHE", "EXIM_PACKAGES", "EXIM_LIBRARIES", "EXIM_USER", "exim_binary",
           "Exim"]


EXIM_CACHE = os.environ.get("SMTPSCREEN_EXIM_CACHE", "/var/cache/smtpscreen-tests/exim")


# The .debs with the binary and the files it reads; unpacked with dpkg -x, never installed.
EXIM_PACKAGES = ("exim4-daemon-heavy", "exim4-base", "exim4-config")


# Shared libraries the heavy daemon links that a machine with Postfix usually lacks;
# installed with apt-get (libraries only, no MTA).
EXIM_LIBRARIES = ("libcrypt1", "libdb5.3", "libgnutls-dane0", "libgnutls30", "libidn12", "libidn2-0",
                  "libldap-2.5-0", "libmariadb3", "libnsl2", "libpam0g", "libpcre2-8-0", "libperl5.36",
                  "libpq5", "libsasl2-2", "libspf2-2", "libsqlite3-0")


EXIM_USER = "Debian-exim"   # compiled into Debian's binary; looked up at every start


def _apt(*args, what):
    for attempt in range(6):   # another test or helper may hold the dpkg lock
        r = subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode == 0:
            return
        if "lock" not in (r.stderr + r.stdout).lower():
            break
        time.sleep(5)
    raise Failure(f"apt-get {' '.join(args)} failed ({what}): {tail(r.stdout + r.stderr, 15)}")


def exim_binary():
    """Path of Debian 12's Exim 4.96 binary (exim4-daemon-heavy), unpacked into EXIM_CACHE:
    downloaded (apt-get download) and unpacked (dpkg -x) when missing, its missing shared
    libraries installed, and the Debian-exim user it looks up at start created. Reused
    by later runs. Needs root."""
    if os.geteuid() != 0:
        raise Skip("Exim runs as root here (exim -C, its own spool)")
    root = os.path.join(EXIM_CACHE, "root")
    exe = os.path.join(root, "usr", "sbin", "exim4")
    if not os.path.exists(exe):
        debs = os.path.join(EXIM_CACHE, "debs")
        os.makedirs(debs, exist_ok=True)
        os.chmod(debs, 0o777)   # apt-get download runs its fetch as _apt
        if not [n for n in os.listdir(debs) if n.endswith(".deb")]:
            log(f"Exim: apt-get download {' '.join(EXIM_PACKAGES)} into {debs}")
            for attempt in range(3):
                r = subprocess.run(["apt-get", "download", *EXIM_PACKAGES], cwd=debs,
                                   capture_output=True, text=True, timeout=300)
                if r.returncode == 0:
                    break
                time.sleep(3)
            else:
                raise Failure(f"apt-get download {' '.join(EXIM_PACKAGES)} failed: {tail(r.stderr, 10)}")
        tmp = root + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for name in sorted(os.listdir(debs)):
            if name.endswith(".deb"):
                subprocess.run(["dpkg", "-x", os.path.join(debs, name), tmp], check=True, timeout=120)
        os.rename(tmp, root)   # a half-unpacked tree is never taken for a whole one
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=30).stdout
    if "not found" in ldd:
        log(f"Exim: installing the libraries it needs: {' '.join(EXIM_LIBRARIES)}")
        _apt("install", "-y", "--no-install-recommends", *EXIM_LIBRARIES, what="Exim's libraries")
        ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=30).stdout
        missing = [ln.strip() for ln in ldd.splitlines() if "not found" in ln]
        check(not missing, f"{exe} still misses libraries: {missing}")
    if not user_exists(EXIM_USER):
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/var/spool/exim4",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", EXIM_USER],
                       check=True, capture_output=True, timeout=30)
    return exe


class Exim:
    """A private Exim 4.96 with its own configuration (exim -C FILE), spool and logs under
    the test's directory; runs as root. Two uses:
      sender:   route_to=(host, port): a manualroute router sends every message there
                (plain SMTP, from source address `interface` when set); send() submits a
                message and delivers it at once (-odi), with -v so .last_output holds
                the SMTP dialogue ("SMTP>> ...", "SMTP(shutdown)>>").
      receiver: start_daemon(port) listens on 127.0.0.1:port (exim -bdf -oX PORT) and
                accepts mail for accept_domains into a Maildir (.maildir), for
                everyone (an open test relay on loopback).
    main_extra / transport_extra: extra lines for the main section and the smtp
    transport (e.g. "hosts_proxy = 127.0.0.1" for a receiver behind PROXY protocol).
    .log() is its mainlog; .message_log(msgid) the lines of one message."""

    def __init__(self, env, name="exim", route_to=None, interface=None,
                 accept_domains="example.test", main_extra="", transport_extra=""):
        self.env, self.name = env, name
        self.exe = exim_binary()
        self.dir = os.path.join(env.dir, name)
        self.spool = os.path.join(self.dir, "spool")
        self.log_dir = os.path.join(self.dir, "log")
        self.maildir = os.path.join(self.dir, "Maildir")
        self.config_path = os.path.join(self.dir, "exim.conf")
        self.route_to, self.interface = route_to, interface
        self.accept_domains = accept_domains
        self.main_extra, self.transport_extra = main_extra, transport_extra
        self.port = None
        self.daemon = None
        self.last_output = ""
        import pwd
        user = pwd.getpwnam(EXIM_USER)
        for d in (self.dir, self.spool, self.log_dir, self.maildir):
            os.makedirs(d, exist_ok=True)
        for d in (self.spool, self.log_dir, self.maildir):
            os.chown(d, user.pw_uid, user.pw_gid)
            os.chmod(d, 0o750)
        os.chmod(self.dir, 0o755)
        env.add_log(f"Exim mainlog ({name})", self.mainlog_path)
        self.write_config()

    @property
    def mainlog_path(self):
        return os.path.join(self.log_dir, "mainlog")

    def write_config(self):
        route = ""
        if self.route_to:
            host, port = self.route_to
            route = f"""
to_target:
  driver = manualroute
  domains = *
  transport = remote_smtp
  route_list = * {host}
  self = send
"""
        text = f"""# written by tests/lib/smtptest/exim.py (class Exim)
exim_path = {self.exe}
spool_directory = {self.spool}
log_file_path = {self.log_dir}/%slog
primary_hostname = exim.test
qualify_domain = example.org
keep_environment =
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
log_selector = +smtp_protocol_error +smtp_syntax_error +incoming_port +outgoing_port \\
  +smtp_connection +received_recipients +delivery_size +pipelining +proxy
tls_advertise_hosts =
{self.main_extra}

begin acl
acl_rcpt:
  accept
acl_data:
  accept

begin routers
{route}
local_mail:
  driver = accept
  domains = {self.accept_domains}
  transport = maildir

begin transports
remote_smtp:
  driver = smtp
  port = {self.route_to[1] if self.route_to else 25}
  hosts_avoid_tls = *
  {f"interface = {self.interface}" if self.interface else ""}
  {self.transport_extra}

maildir:
  driver = appendfile
  directory = {self.maildir}
  maildir_format
  create_directory
  user = {EXIM_USER}
  delivery_date_add
  envelope_to_add
  return_path_add

begin retry
*  *  F,1h,10m
"""
        with open(self.config_path, "w") as f:
            f.write(text)
        os.chmod(self.config_path, 0o644)
        r = subprocess.run([self.exe, "-C", self.config_path, "-bV"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Failure(f"exim -C {self.config_path} -bV failed:\n{r.stdout}{r.stderr}")

    def send(self, marker, mail_from="sender@example.org", rcpt="user@example.test", timeout=60):
        """Submits a message with Subject marker and delivers it at once (-odi, -v): returns
        the exim process's output (the SMTP dialogue), also kept in .last_output."""
        text = message_text(marker, mail_from, rcpt).replace("\r\n", "\n")
        r = subprocess.run([self.exe, "-C", self.config_path, "-odi", "-v", "-f", mail_from, rcpt],
                           input=text, capture_output=True, text=True, timeout=timeout)
        self.last_output = r.stdout + r.stderr
        if r.returncode != 0:
            raise Failure(f"exim -odi exited {r.returncode}:\n{tail(self.last_output, 40)}")
        return self.last_output

    def start_daemon(self, port=None):
        """Listens on 127.0.0.1:port (free_port() when None) in the foreground (-bdf), as a
        child of the test; stopped when the test ends."""
        self.port = port or free_port()
        logf = open(os.path.join(self.dir, "daemon.out"), "w")
        self.daemon = subprocess.Popen([self.exe, "-C", self.config_path, "-bdf", "-oX", str(self.port)],
                                       stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.env.add_cleanup(self.stop)
        wait_until(lambda: port_listening("127.0.0.1", self.port) or self.daemon.poll() is not None, 10,
                   what=f"exim listening on 127.0.0.1:{self.port}")
        check(self.daemon.poll() is None, f"exim -bdf exited {self.daemon.returncode}: "
                                          f"{read_text(os.path.join(self.dir, 'daemon.out'))}{self.log()}")
        log(f"exim {self.name}: daemon pid {self.daemon.pid} on 127.0.0.1:{self.port}")
        return self

    def stop(self):
        terminate(self.daemon)
        self.daemon = None

    def log(self):
        return read_text(self.mainlog_path)

    def message_log(self, msgid):
        return [ln for ln in self.log().splitlines() if f" {msgid} " in ln]

    def message_ids(self, marker=None):
        """Ids of the messages Exim received (the '<=' lines), in order."""
        return re.findall(r"^\S+ \S+ (\S+) <= ", self.log(), re.M)

    def queue(self):
        """Exim's own queue listing (exim -bp): empty once everything is delivered."""
        r = subprocess.run([self.exe, "-C", self.config_path, "-bp"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    def delivered(self, marker):
        """Messages in the receiver's Maildir that contain marker."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                text = read_text(os.path.join(d, n))
                if marker in text:
                    out.append(text)
        return out
