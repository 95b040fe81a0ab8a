#!/usr/bin/env python3
"""The fail2ban files of conf/fail2ban/ work on what smtpscreen really logs, as
fail2ban-regex (Debian's fail2ban) reads it:
  - with the default tag, the shipped filter (filter.d/smtpscreen.conf, mode normal and
    aggressive) matches a DNSBL-listed client that smtpscreen rejected (its NOQUEUE
    line) and a pregreet bot (its PREGREET line), each with its own address, and never
    a line of a clean client that passed and delivered its message; in aggressive mode
    only, a client refused by limits.per_client_rate (its RATE LIMIT line, once); in
    both modes, a client that ban.after banned (its BANNED line, beside its PREGREET
    lines);
    fail2ban's stock postfix filter matches nothing there;
  - with log.syslog_name = postfix/postscreen, fail2ban's stock filter
    postfix[mode=aggressive] matches the same two clients and never the clean one.
The lines are the ones smtpscreen sends to syslog(3) (log.syslog = on): it runs in a
mount namespace of its own whose /dev/log is this test's datagram socket, and the test
writes each message to a file as rsyslog's traditional format does (the date from the
message, the host name, the tag, the text): the file fail2ban reads on a host with
rsyslog. The filter and its includes are read from a copy of /etc/fail2ban with the
shipped filter added, as they are once installed."""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

LISTED, BOT, CLEAN = "127.0.0.2", "127.0.0.8", "127.0.0.7"
RATER = "127.0.0.9"  # over limits.per_client_rate = 2/1m on its third connection
BANNED = "127.0.0.11"  # two pregreet sessions within ban.after = 2/1m (listed nowhere: a DNSBL answer before its EHLO is read would take the PREGREET line away)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# smtpscreen with /dev/log pointing at the test's socket: a private mount namespace, and
# in it an overlay on /dev (its upper layer on a tmpfs of that namespace alone), so that
# neither the host's /dev nor another test sees the link. exec keeps smtpscreen's PID.
WRAPPER = """#!/bin/sh
exec unshare --mount --propagation private /bin/sh -c '
  mount -t tmpfs tmpfs "$1" && mkdir "$1/upper" "$1/work" &&
  mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" /dev &&
  ln -s "$2" /dev/log && shift 2 && exec "$@"' sh {ns} {sock} {exe} "$@"
"""


class SyslogFile:
    """A datagram socket for syslog(3), its messages written as rsyslog's
    RSYSLOG_TraditionalFileFormat writes them: 'Mmm dd hh:mm:ss host tag[pid]: text'."""

    def __init__(self, env, name):
        self.socket_path = os.path.join(env.dir, f"{name}.dev-log")
        self.path = os.path.join(env.dir, f"{name}.syslog")
        self.host = socket.gethostname().split(".")[0]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.socket_path)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        env.add_cleanup(self.stop)
        env.add_log(f"syslog ({name})", self.path)

    def _run(self):
        with open(self.path, "a") as out:
            while not self.stopping.is_set():
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                m = re.match(r"<\d+>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (.*)", data.decode(errors="replace"), re.S)
                if m:
                    out.write(f"{m.group(1)} {self.host} {m.group(2).rstrip()}\n")
                    out.flush()

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()

    def text(self):
        with open(self.path) as f:
            return f.read()


def start_screen(env, pf, dns, name, syslog_name, settings=None):
    log = SyslogFile(env, name)
    ns = os.path.join(env.dir, f"{name}.ns")
    os.makedirs(ns)
    screen = env.smtpscreen(postfix=pf, dns=dns, name=name, start=False, settings={
        "log.syslog": "on", "log.syslog_name": syslog_name, **(settings or {})})
    wrapper = os.path.join(env.dir, f"{name}.sh")
    with open(wrapper, "w") as f:
        f.write(WRAPPER.format(ns=ns, sock=log.socket_path, exe=screen.exe))
    os.chmod(wrapper, 0o755)
    screen.exe = wrapper
    screen.start()
    return screen, log


def run_clients(screen, pf):
    """A DNSBL-listed client rejected at its RCPT, a pregreet bot, a clean client."""
    c = harness.SmtpClient(screen.port, source=LISTED, timeout=15)
    harness.read_greeting_full(c)
    c.expect("EHLO listed.example", 250)
    c.expect("MAIL FROM:<spam@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 550, r"5\.7\.1 Service unavailable; client \[127\.0\.0\.2\] blocked")
    c.cmd("QUIT")
    c.close()
    bot = harness.SmtpClient(screen.port, source=BOT, timeout=15)
    bot.send("EHLO bot.example\r\n")
    screen.wait_for_log(harness.re_pregreet(BOT))
    bot.close()
    harness.clean_session(screen, pf, source=CLEAN)
    for ip in (LISTED, BOT, CLEAN):
        screen.wait_for_log(harness.re_disconnect(ip), timeout=10)


def run_rater(screen):
    """Two sessions that pass and quit at the backend, then a third connection within
    the minute, refused with 421 by limits.per_client_rate."""
    sessions = [harness.SmtpClient(screen.port, source=RATER, timeout=15) for _ in range(2)]
    for c in sessions:
        c.read_greeting(timeout=10, code=220)
    refused = harness.SmtpClient(screen.port, source=RATER, timeout=5)
    check(refused.read_reply(timeout=3).code == 421, "the third connection a minute must get 421")
    refused.close()
    for c in sessions:
        c.expect("QUIT", 221)
        c.close()
    screen.wait_for_log(rf"RATE LIMIT 2/1m from {harness.ip_port(RATER)} \(limits\.per_client_rate\)")


def run_banned(screen):
    """Two pregreet sessions: the second one's failure bans the client (ban.after = 2/1m)."""
    for _ in range(2):
        bot = harness.SmtpClient(screen.port, source=BANNED, timeout=15)
        bot.send("EHLO bot.example\r\n")
        port = bot.local_port
        screen.wait_for_log(harness.re_pregreet(BANNED, port))
        bot.close()
        screen.wait_for_log(harness.re_disconnect(BANNED, port), timeout=10)
    screen.wait_for_log(rf"BANNED {harness.ip_port(BANNED)} until \S+ after 2 failures")


def fail2ban_regex(confdir, logfile, filt):
    """The addresses fail2ban-regex finds in logfile with filt, one per matched line."""
    r = subprocess.run([harness.which("fail2ban-regex"), "--config", confdir, "-o", "ip", logfile, filt],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"fail2ban-regex {filt} {logfile} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]


def wait_for_syslog(log, regex):
    harness.wait_until(lambda: re.search(regex, log.text(), re.M), 10, what=f"/{regex}/ in {log.path}")


def main(env):
    harness.need_programs("fail2ban-regex", "unshare")
    if not os.path.isdir("/etc/fail2ban/filter.d"):
        raise harness.Skip("/etc/fail2ban/filter.d is missing (fail2ban not installed)")
    confdir = os.path.join(env.dir, "fail2ban")
    shutil.copytree("/etc/fail2ban", confdir)
    shutil.copy(os.path.join(ROOT, "conf", "fail2ban", "filter.d", "smtpscreen.conf"),
                os.path.join(confdir, "filter.d", "smtpscreen.conf"))

    pf = env.postfix()
    dns = env.rbldnsd()

    # The default tag and the shipped filter.
    screen, log = start_screen(env, pf, dns, "tagged", "smtpscreen",
                               {"limits.per_client_rate": "2/1m", "ban.after": "2/1m"})
    run_clients(screen, pf)
    run_rater(screen)
    run_banned(screen)
    wait_for_syslog(log, rf"^\w{{3}} [ \d]\d [\d:]+ \S+ smtpscreen\[{screen.pid}\]: DISCONNECT \[{re.escape(CLEAN)}\]")
    screen.stop()
    clean_lines = os.path.join(env.dir, "clean.syslog")
    with open(clean_lines, "w") as f:
        f.writelines(ln + "\n" for ln in log.text().splitlines() if f"[{CLEAN}]" in ln)
    check(os.path.getsize(clean_lines) > 0, "no line of the clean client reached syslog")
    for mode in ("normal", "aggressive"):
        ips = fail2ban_regex(confdir, log.path, f"smtpscreen[mode={mode}]")
        harness.log(f"smtpscreen[mode={mode}] on the default tag's log: {ips}")
        for ip, what in ((LISTED, "the DNSBL-rejected client"), (BOT, "the pregreet bot")):
            check(ip in ips, f"smtpscreen[mode={mode}] does not match {what} ({ip}): {ips}\n{log.text()}")
        check(CLEAN not in ips, f"smtpscreen[mode={mode}] matches the clean client {CLEAN}: {ips}")
        want = 1 if mode == "aggressive" else 0
        check(ips.count(RATER) == want,
              f"smtpscreen[mode={mode}] matches the rate-limited client {RATER} {ips.count(RATER)} time(s), "
              f"expected {want}: {ips}")
        # Its two PREGREET lines and its BANNED line; aggressive also matches the HANGUP
        # after each pregreet, as for the pregreet bot.
        want = 5 if mode == "aggressive" else 3
        check(ips.count(BANNED) == want,
              f"smtpscreen[mode={mode}] must match the banned client's two PREGREET lines and its BANNED line "
              f"(and its two HANGUP lines in aggressive mode): {want}, matched {ips.count(BANNED)}: {ips}")
        check(not fail2ban_regex(confdir, clean_lines, f"smtpscreen[mode={mode}]"),
              f"smtpscreen[mode={mode}] matches a line of the clean client")
    check(not fail2ban_regex(confdir, log.path, "postfix[mode=aggressive]"),
          "fail2ban's stock postfix filter matches lines tagged smtpscreen")

    # log.syslog_name = postfix/postscreen and fail2ban's own postfix filter.
    screen, log = start_screen(env, pf, dns, "postscreen", "postfix/postscreen")
    run_clients(screen, pf)
    wait_for_syslog(log, rf"postfix/postscreen\[{screen.pid}\]: DISCONNECT \[{re.escape(CLEAN)}\]")
    screen.stop()
    ips = fail2ban_regex(confdir, log.path, "postfix[mode=aggressive]")
    harness.log(f"postfix[mode=aggressive] with log.syslog_name = postfix/postscreen: {ips}")
    for ip, what in ((LISTED, "the DNSBL-rejected client"), (BOT, "the pregreet bot")):
        check(ip in ips, f"postfix[mode=aggressive] does not match {what} ({ip}): {ips}\n{log.text()}")
    check(CLEAN not in ips, f"postfix[mode=aggressive] matches the clean client {CLEAN}: {ips}")


harness.run(main)
