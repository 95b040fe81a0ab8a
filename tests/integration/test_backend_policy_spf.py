#!/usr/bin/env python3
"""A real policyd-spf behind smtpscreen checks SPF against the client's address (README,
"Backend policies behind smtpscreen").

The domain spf.test publishes "v=spf1 ip4:127.0.0.56 -all" from rbldnsd (a generic
zone) on port 53 of a loopback address of its own (a free one of 127.53.x.y, so that
two runs side by side do not collide). policyd-spf (Debian's postfix-policyd-spf-python) reads the system
resolver's configuration only, so the test runs in a mount namespace of its own where
/etc/resolv.conf names that address; the host's file is never touched. A private Postfix
spawns policyd-spf as its README says (spawn(8) in master.cf,
check_policy_service unix:private/policyd-spf in smtpd_recipient_restrictions), with a
configuration whose skip_addresses leaves loopback clients checked (Debian's default
skips 127.0.0.0/8). For each handoff, PROXY v2 and XCLIENT:

1. 127.0.0.55 sends MAIL FROM <alice@spf.test>: its RCPT gets 550 5.7.23 with SPF's
   "Message rejected due to: SPF fail - not authorized" and ip=127.0.0.55 in the text.
2. 127.0.0.56, the address the record lists, sends the same mail: accepted, delivered,
   and the message carries policyd-spf's "Received-SPF: Pass" with client-ip=127.0.0.56.
Were smtpscreen's own 127.0.0.1 what the backend saw, both would fail alike."""
import os
import random
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

harness.reexec_in_private_mount_namespace()

REFUSED = "127.0.0.55"
LISTED = "127.0.0.56"
SENDER = "alice@spf.test"
RCPT = "user@example.test"

POLICYD_SPF_CONF = """\
debugLevel = 1
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = ::ffff:192.0.2.0/120
"""


def policyd_spf(env):
    exe = harness.which("policyd-spf")
    conf = os.path.join(env.dir, "policyd-spf.conf")
    with open(conf, "w") as f:
        f.write(POLICYD_SPF_CONF)
    os.chmod(conf, 0o644)
    user = "policyd-spf" if harness.user_exists("policyd-spf") else "nobody"
    master = (f"policyd-spf unix - n n - 0 spawn\n"
              f"  user={user} argv={exe} {conf}\n")
    main_extra = {
        "policyd-spf_time_limit": "3600",
        "smtpd_recipient_restrictions": "check_policy_service unix:private/policyd-spf",
    }
    return master, main_extra


def run(env, pf, handoff, port):
    screen = env.smtpscreen(name=f"spf-{handoff}", postfix=pf,
                            settings={"backend.address": f"127.0.0.1:{port}", "backend.handoff": handoff})

    c = harness.SmtpClient(screen.port, source=REFUSED, timeout=20)
    r = c.read_reply(timeout=10)
    check(r.code == 220, f"{REFUSED}: expected 220, got {r.text!r}")
    c.ehlo("mail.spf.test")
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    reply = c.cmd(f"RCPT TO:<{RCPT}>", timeout=20)
    check(reply.code == 550 and "SPF fail - not authorized" in reply.text
          and f"ip={REFUSED}" in reply.text,
          f"{REFUSED} is not in spf.test's record (-all): expected 550 ... SPF fail ... ip={REFUSED}, "
          f"got {reply.text!r} ({handoff})")
    c.expect("QUIT", 221)
    pf.wait_for_log(rf"NOQUEUE: reject: RCPT from unknown\[{re.escape(REFUSED)}\]:\d+: 550 5\.7\.23 "
                    rf"<{re.escape(RCPT)}>: Recipient address rejected: Message rejected due to: SPF fail - "
                    rf"not authorized\..*ip={re.escape(REFUSED)}")

    marker = harness.unique_marker(f"spf-{handoff}")
    c = harness.SmtpClient(screen.port, source=LISTED, timeout=20)
    r = c.read_reply(timeout=10)
    check(r.code == 220, f"{LISTED}: expected 220, got {r.text!r}")
    c.send_mail(marker, mail_from=SENDER, helo="mail.spf.test")
    text = pf.wait_for_delivery(marker)
    check(re.search(rf"^Received-SPF: Pass \(mailfrom\) identity=mailfrom; client-ip={re.escape(LISTED)};",
                    text, re.M),
          f"the message from {LISTED} must carry policyd-spf's Received-SPF: Pass for client-ip={LISTED} "
          f"({handoff}); it has:\n{text[:1500]}")
    screen.stop()


def free_dns_address():
    """A loopback address whose UDP port 53 nothing holds: resolv.conf takes no port."""
    for _ in range(50):
        addr = f"127.53.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((addr, 53))
                return addr
            except OSError:
                continue
    raise harness.Failure("no loopback address 127.53.x.y with a free UDP port 53")


def main(env):
    dns_addr = free_dns_address()
    dns = env.rbldnsd(zones={"spf.test": ("generic", ['@ TXT "v=spf1 ip4:127.0.0.56 -all"'])},
                      host=dns_addr, port=53, name="spf-dns")
    harness.bind_resolv_conf(env, dns_addr)
    master, main_extra = policyd_spf(env)
    pf = env.postfix(main_extra=main_extra, master_extra=master)
    check(dns.proc.poll() is None, "rbldnsd for spf.test must be running")
    run(env, pf, "proxy-v2", pf.proxy_port)
    run(env, pf, "xclient", pf.xclient_port)


harness.run(main, timeout=150)
