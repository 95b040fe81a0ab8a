#!/usr/bin/env python3
"""smtpscreen --from-postconf on the real `postconf -n` of a Postfix configured with
postscreen (README, "Coming from postscreen"): a private config directory gets postscreen's
parameters with `postconf -c DIR -e`, `postconf -c DIR -n` prints them as Postfix does, and
the INI smtpscreen writes from that output must pass `smtpscreen --check` and give the
expected keys in `--print-config`; each parameter without an equivalent is a comment that
names it. Then the migrated INI (plus listen and backend addresses, which live in
master.cf) runs in front of a real Postfix: the cidr table's reject line drops its client
as postscreen_denylist_action = drop says, a DNSBL-listed client is dropped, a clean one
is delivered."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

DENIED = "127.0.0.41"
LISTED = harness.LISTED_CLIENT   # in bl.test
CLEAN = "127.0.0.42"


def print_config_values(text):
    """{"section.key": value} from --print-config's INI (continuation lines joined)."""
    values, section, last = {}, None, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and last:
            values[last] += " " + line.strip()
            continue
        m = re.fullmatch(r"\[(\w+)\]", line.strip())
        if m:
            section = m.group(1)
            continue
        name, _, value = line.partition("=")
        last = f"{section}.{name.strip()}"
        values[last] = value.strip()
    return values


def main(env):
    postconf = harness.which("postconf")
    conf = os.path.join(env.dir, "postfix-etc")
    os.makedirs(conf)
    open(os.path.join(conf, "main.cf"), "w").close()
    cidr = os.path.join(conf, "postscreen_access.cidr")
    with open(cidr, "w") as f:
        f.write("# postscreen's access list\n"
                f"{DENIED}/32   reject\n"
                "192.0.2.0/24    permit\n")
    settings = [
        "myhostname=mx.example.org",
        "postscreen_access_list=cidr:" + cidr,
        "postscreen_denylist_action=drop",
        "postscreen_dnsbl_sites=bl.test=127.0.0.[2..20]*2 wl.test=127.0.0.3*-2, zen.spamhaus.org*3",
        "postscreen_dnsbl_threshold=2",
        "postscreen_dnsbl_allowlist_threshold=-1",
        "postscreen_dnsbl_action=drop",
        "postscreen_dnsbl_timeout=4s",
        "postscreen_greet_action=enforce",
        "postscreen_greet_wait=${stress?{1}:{1}}s",
        "postscreen_greet_banner=$myhostname ESMTP screening",
        "postscreen_greet_ttl=3d",
        "postscreen_pipelining_enable=yes",
        "postscreen_bare_newline_enable=yes",
        "postscreen_bare_newline_action=enforce",
        "postscreen_bare_newline_ttl=12d",
        "postscreen_cache_map=btree:$data_directory/postscreen_cache",
        "postscreen_cache_cleanup_interval=6h",
        "postscreen_client_connection_count_limit=7",
        "postscreen_command_time_limit=45s",
        "postscreen_reject_footer=see https://example.org/blocked",
        "postscreen_upstream_proxy_protocol=haproxy",
    ]
    r = subprocess.run([postconf, "-c", conf, "-e"] + settings, capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"postconf -e failed: {r.stdout}{r.stderr}")
    r = subprocess.run([postconf, "-c", conf, "-n"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and "postscreen_dnsbl_sites" in r.stdout, f"postconf -n: {r.stdout}{r.stderr}")
    postconf_n = r.stdout
    harness.log("postconf -n:\n" + postconf_n)

    r = subprocess.run([harness.find_smtpscreen(), "--from-postconf"], input=postconf_n,
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"--from-postconf exited {r.returncode}: {r.stderr}")
    ini = r.stdout
    harness.log("--from-postconf:\n" + ini)
    ini_path = os.path.join(env.dir, "migrated.ini")
    with open(ini_path, "w") as f:
        f.write(ini)

    r = harness.run_smtpscreen(["--check", "-c", ini_path])
    check(r.returncode == 0 and r.stdout.strip() == f"{ini_path}: OK",
          f"the migrated INI must load: rc {r.returncode}\n{r.stdout}{r.stderr}\n{ini}")
    r = harness.run_smtpscreen(["--print-config", "-c", ini_path])
    check(r.returncode == 0, f"--print-config: {r.stderr}")
    got = print_config_values(r.stdout)
    expected = {
        "access.file": cidr,
        "access.action": "drop",
        "dnsbl.sites": "bl.test=127.0.0.[2..20]*2, wl.test=127.0.0.3*-2, zen.spamhaus.org*3",
        "dnsbl.threshold": "2",
        "dnsbl.allowlist_threshold": "-1",
        "dnsbl.action": "drop",
        "dnsbl.timeout": "4s",
        "greet.action": "enforce",
        "greet.wait": "1s",

        "deep.pipelining": "on",
        "deep.bare_newline": "on",
        "deep.non_smtp_command": "off",
        "deep.action": "enforce",
        "cache.pregreet_ttl": "3d",
        "cache.deep_ttl": "12d",
        "cache.cleanup_interval": "6h",
        "limits.per_client_connections": "7",
        "limits.command_time_limit": "45s",
        "listen.proxy_protocol": "auto",
    }
    # $myhostname becomes greet.hostname where this smtpscreen has that key, else the name.
    if "greet.hostname" in got:
        expected.update({"greet.hostname": "mx.example.org", "greet.banner": "$hostname ESMTP screening"})
    else:
        expected["greet.banner"] = "mx.example.org ESMTP screening"
    wrong = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
    check(not wrong, f"--print-config of the migrated INI: (expected, got) {wrong}\nINI:\n{ini}")
    for name in ("postscreen_cache_map", "postscreen_reject_footer"):
        check(re.search(rf"^# {name} = .*: not mapped, \S", ini, re.M),
              f"{name} has no equivalent and must be a comment naming it:\n{ini}")
    check("# postscreen_dnsbl_sites = " in ini, f"each key must name its postscreen parameter:\n{ini}")

    # The same INI in front of a real Postfix, with what master.cf held and what this
    # test needs (its own ports, cache file, DNS server and logs); no load balancer in
    # front here, so the PROXY header is off. A section may appear twice.
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, start=False)
    run_ini, n = re.subn(r"^proxy_protocol = auto\n", "", ini, flags=re.M)
    check(n == 1, f"listen.proxy_protocol = auto once in the INI:\n{ini}")
    own = {k: v for k, v in screen.settings.items()
           if k.split(".")[0] in ("backend", "log") or k in ("listen.address", "cache.path", "dnsbl.servers",
                                                              "limits.shutdown_grace")}
    screen.write_config(run_ini + "\n" + harness.ini_text(own))
    screen.start()

    denied = harness.SmtpClient(screen.port, source=DENIED)
    reply = denied.read_reply()
    check(reply.code == 521 and "5.3.2" in reply.final,
          f"{DENIED} is 'reject' in the cidr table, postscreen_denylist_action = drop: expected 521 5.3.2, "
          f"got {reply.text!r}")
    denied.check_closed(5, "after the 521")
    screen.wait_for_log(rf"DENYLISTED {harness.ip_port(DENIED)}")

    listed = harness.SmtpClient(screen.port, source=LISTED)
    reply = listed.read_reply(timeout=10)
    check(reply.final == "521 5.7.1 Service unavailable",
          f"{LISTED} is in bl.test (weight 2, threshold 2, postscreen_dnsbl_action = drop): expected "
          f"'521 5.7.1 Service unavailable', got {reply.text!r}")
    screen.wait_for_log(harness.re_dnsbl_rank(LISTED, 2))

    marker = harness.unique_marker("migrated")
    clean = harness.SmtpClient(screen.port, source=CLEAN, timeout=15)
    reply = clean.read_reply(timeout=10)
    check(reply.code == 220, f"clean client {CLEAN}: expected 220, got {reply.text!r}")
    # The deep tests are on: smtpscreen speaks SMTP up to RCPT, then replays to Postfix.
    clean.send_mail(marker)
    pf.wait_for_delivery(marker)
    pf.wait_for_log(harness.postfix_client_regex(CLEAN))
    screen.stop()


harness.run(main, timeout=150)
