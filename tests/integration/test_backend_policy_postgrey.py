#!/usr/bin/env python3
"""A real postgrey behind smtpscreen greylists by the client's address (README, "Backend
policies behind smtpscreen").

postgrey (Debian's package) runs by hand on a loopback port with its own database
directory, --lookup-by-host (the triplet holds the whole client address, not its /24)
and a delay of DELAY seconds; a private Postfix asks it from smtpd_recipient_restrictions
(check_policy_service). For each handoff, PROXY v2 and XCLIENT:

1. 127.0.0.55 sends MAIL FROM <s> RCPT TO <r>: 450 4.2.0 ... Greylisted, and postgrey
   logs the triplet with client_address=127.0.0.55.
2. After the delay, 127.0.0.57 sends the same <s> and <r>: greylisted again, as a new
   triplet of its own. Were the backend to see smtpscreen's 127.0.0.1 for every client,
   this would be the first triplet's retry and pass.
3. 127.0.0.55 retries: the triplet is found, the mail is accepted and delivered."""
import grp
import os
import pwd
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

FIRST = "127.0.0.55"
OTHER = "127.0.0.57"
DELAY = 2
RCPT = "user@example.test"


class Postgrey:
    """postgrey on 127.0.0.1:port in the foreground; without --daemonize it logs to
    stderr, which goes to a file here."""

    def __init__(self, env):
        self.env = env
        self.dir = os.path.join(env.dir, "postgrey")
        self.db = os.path.join(self.dir, "db")
        self.log_path = os.path.join(self.dir, "postgrey.log")
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        exe = harness.which("postgrey")
        os.makedirs(self.db)
        os.chmod(self.dir, 0o755)
        user = "postgrey" if harness.user_exists("postgrey") else "nobody"
        pw = pwd.getpwnam(user)
        os.chown(self.db, pw.pw_uid, pw.pw_gid)
        empty = os.path.join(self.dir, "empty")
        open(empty, "w").close()
        os.chmod(empty, 0o644)
        cmd = [exe, f"--inet=127.0.0.1:{self.port}", f"--dbdir={self.db}", f"--delay={DELAY}",
               "--lookup-by-host", f"--whitelist-clients={empty}", f"--whitelist-recipients={empty}",
               f"--user={user}", f"--group={grp.getgrgid(pw.pw_gid).gr_name}"]
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.env.add_cleanup(self.stop)
        self.env.add_log("postgrey log", self.log_path)

        def up():
            if self.proc.poll() is not None:
                raise harness.Failure(f"postgrey exited with {self.proc.returncode}: {harness.read_text(self.log_path)}")
            return harness.port_listening("127.0.0.1", self.port)

        harness.wait_until(up, 20, what=f"postgrey listening on 127.0.0.1:{self.port}")
        harness.log(f"postgrey pid {self.proc.pid} on 127.0.0.1:{self.port}, db {self.db}")
        return self

    def log(self):
        return harness.read_text(self.log_path)

    def wait_for_log(self, regex, timeout=10):
        return harness.wait_until(lambda: re.search(regex, self.log(), re.M), timeout,
                                  what=f"/{regex}/ in postgrey's log {self.log_path}")

    def stop(self):
        harness.terminate(self.proc)


def rcpt_reply(screen, source, sender):
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    r = c.read_reply(timeout=10)
    check(r.code == 220, f"{source}: expected 220, got {r.text!r}")
    c.ehlo()
    c.expect(f"MAIL FROM:<{sender}>", 250)
    return c, c.cmd(f"RCPT TO:<{RCPT}>")


def greylisted(screen, pf, grey, source, sender):
    c, reply = rcpt_reply(screen, source, sender)
    check(reply.code == 450 and "Greylisted" in reply.text,
          f"{source}, MAIL FROM <{sender}>: expected postgrey's 450 ... Greylisted, got {reply.text!r}")
    c.expect("QUIT", 221)
    sender_re = re.escape(sender)
    grey.wait_for_log(rf"action=greylist, reason=new, client_name=\S+, client_address={re.escape(source)}(/\d+)?, "
                      rf"sender={sender_re}, recipient={re.escape(RCPT)}")
    pf.wait_for_log(rf"NOQUEUE: reject: RCPT from unknown\[{re.escape(source)}\]:\d+: 450 4\.\d\.\d "
                    rf"<{re.escape(RCPT)}>: Recipient address rejected: Greylisted.*from=<{sender_re}>")


def run(env, pf, grey, handoff, port):
    screen = env.smtpscreen(name=f"postgrey-{handoff}", postfix=pf,
                            settings={"backend.address": f"127.0.0.1:{port}", "backend.handoff": handoff})
    sender = f"{handoff}@sender.example.org"
    greylisted(screen, pf, grey, FIRST, sender)
    started = time.monotonic()
    time.sleep(DELAY + 1)
    # Another client, the same sender and recipient: a triplet of its own.
    greylisted(screen, pf, grey, OTHER, sender)
    check(time.monotonic() - started > DELAY, "the retry must come after postgrey's delay")
    # The first client's retry passes and the mail arrives.
    marker = harness.unique_marker(f"postgrey-{handoff}")
    c = harness.SmtpClient(screen.port, source=FIRST, timeout=15)
    r = c.read_reply(timeout=10)
    check(r.code == 220, f"{FIRST} retry: expected 220, got {r.text!r}")
    c.send_mail(marker, mail_from=sender)
    grey.wait_for_log(rf"action=pass, reason=triplet found, delay=\d+, client_name=\S+, "
                      rf"client_address={re.escape(FIRST)}(/\d+)?, sender={re.escape(sender)}")
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(FIRST))
    screen.stop()


def main(env):
    harness.need_programs("postgrey")
    grey = Postgrey(env).start()
    pf = env.postfix(main_extra={
        "smtpd_recipient_restrictions": f"check_policy_service inet:127.0.0.1:{grey.port}",
    })
    run(env, pf, grey, "proxy-v2", pf.proxy_port)
    run(env, pf, grey, "xclient", pf.xclient_port)


harness.run(main, timeout=150)
