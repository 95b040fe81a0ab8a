#!/usr/bin/env python3
"""The command line and the configuration checks (smtpscreen.ini(5), smtpscreen(8), docs/design.md "Hostile input"):
  - `--check` on a file with several mistakes exits 1 and reports every one of them as
    FILE:LINE: section.key (bad values, unknown keys, unknown sections);
  - a missing file, a missing access.file, a bad access.file line are errors that name
    the file (and line);
  - `--check` on a clean file exits 0; the shipped conf/smtpscreen.ini passes;
  - `--print-config` prints every key of smtpscreen.ini(5) in its order with defaults
    filled in, and its output passes `--check`;
  - backend.handoff = none is refused unless backend.i_know_this_is_an_open_relay =
    yes, and then it warns when it starts;
  - starting with a bad file fails (non-zero exit) without listening."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, fail  # noqa: E402

# smtpscreen.ini(5), in order.
DOCUMENTED_KEYS = """
listen.address listen.proxy_protocol listen.proxy_from listen.proxy_timeout
backend.address backend.handoff backend.source_address backend.connect_timeout
backend.idle_timeout backend.i_know_this_is_an_open_relay backend.tls backend.tls_name backend.tls_ca
greet.banner greet.hostname greet.wait greet.action
dnsbl.sites dnsbl.threshold dnsbl.allowlist_threshold dnsbl.action dnsbl.timeout
dnsbl.servers dnsbl.reply_map
deep.pipelining deep.non_smtp_command deep.bare_newline deep.action deep.forbidden_commands
deep.ehlo_keywords
access.file access.action
cache.backend cache.path cache.redis cache.redis_timeout cache.redis_password cache.redis_db
cache.redis_prefix cache.cleanup_interval cache.pregreet_ttl cache.dnsbl_min_ttl
cache.dnsbl_max_ttl cache.deep_ttl
tls.cert tls.key tls.ciphers tls.min_version tls.handshake_timeout tls.max_pending_handshakes
tls.handshake_threads tls.handshake_nice tls.ticket_key_file tls.passthrough tls.before_backend
limits.max_connections limits.per_client_connections limits.per_client_rate
limits.per_network_rate limits.network_prefix limits.rate_table_size limits.command_time_limit
limits.command_count_limit limits.shutdown_grace
ban.after ban.time ban.max_time ban.action
tarpit.delay tarpit.max_connections
greylist.enable greylist.delay greylist.retry_window greylist.ttl greylist.table_size
smuggling.bare_lf
log.syslog log.syslog_name log.stderr
stats.listen
process.user process.threads
""".split()

BAD = """\
# line 1: several mistakes, each must be reported with its line
[listen]
address = 127.0.0.1:2525
proxy_protocol = sometimes
[greet]
wait = 6x
[nosuchsection]
foo = bar
[backend]
no_such_key = 1
handoff = carrier-pigeon
[dnsbl]
sites = bl.test=127.0.0.[2..x]
threshold = many
[cache]
backend = floppy
"""

# (line, key or section) that the --check output must name, each on one line.
BAD_EXPECTED = [
    (4, "listen.proxy_protocol"),
    (6, "greet.wait"),
    ((7, 8), "nosuchsection"),
    (10, "backend.no_such_key"),
    (11, "backend.handoff"),
    (13, "dnsbl.sites"),
    (14, "dnsbl.threshold"),
    (16, "cache.backend"),
]


def write(env, name, text):
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def run(*args):
    r = harness.run_smtpscreen(list(args))
    return r.returncode, r.stdout + r.stderr


def expect_error(env, what, path, rc_out, line, key):
    rc, out = rc_out
    check(rc == 1, f"{what}: --check must exit 1, got {rc}; output:\n{out}")
    lines = line if isinstance(line, tuple) else (line,)
    pattern = "|".join(rf"{re.escape(path)}:{n}\b.*{re.escape(key)}" for n in lines)
    check(re.search(pattern, out), f"{what}: no error naming {path}:{'/'.join(map(str, lines))} and "
                                   f"{key!r}; output:\n{out}")


def main(env):
    # Every error, each with file:line and key.
    bad = write(env, "bad.ini", BAD)
    result = run("--check", "-c", bad)
    for line, key in BAD_EXPECTED:
        expect_error(env, "bad.ini", bad, result, line, key)

    # A missing file.
    missing = os.path.join(env.dir, "does-not-exist.ini")
    rc, out = run("--check", "-c", missing)
    check(rc == 1 and missing in out, f"missing file: rc {rc} (expected 1), output must name {missing}:\n{out}")

    # A missing access.file, a bad line in an access.file.
    nofile = os.path.join(env.dir, "no-such-access.cidr")
    p = write(env, "noaccess.ini", f"[listen]\naddress = 127.0.0.1:2525\n[access]\nfile = {nofile}\n")
    expect_error(env, "missing access.file", p, run("--check", "-c", p), 4, "access.file")
    acl = write(env, "access.cidr", "127.0.0.1 permit\n127.0.0.300 reject\n")
    p = write(env, "badaccess.ini", f"[access]\nfile = {acl}\n")
    rc, out = run("--check", "-c", p)
    check(rc == 1 and re.search(rf"{re.escape(acl)}:2\b", out),
          f"bad access.file line: rc {rc} (expected 1), output must name {acl}:2:\n{out}")

    # A clean file.
    good = write(env, "good.ini", "[listen]\naddress = 127.0.0.1:2525\n[greet]\nwait = 3s\n"
                                  "[dnsbl]\nsites = zen.spamhaus.org=127.0.0.[2..11]*3, "
                                  "list.dnswl.org=127.0.[0..255].[1..3]*-2\nallowlist_threshold = -1\n"
                                  "[log]\nsyslog = off\n")
    rc, out = run("--check", "-c", good)
    check(rc == 0, f"clean file: --check must exit 0, got {rc}:\n{out}")

    # The shipped configuration.
    shipped = os.path.join(os.path.dirname(os.path.dirname(harness.HERE)), "conf", "smtpscreen.ini")
    if os.path.exists(shipped):
        rc, out = run("--check", "-c", shipped)
        check(rc == 0, f"conf/smtpscreen.ini: --check must exit 0, got {rc}:\n{out}")
    else:
        fail(f"{shipped} is missing (the README's run command starts with it)")

    # --print-config: every key, in smtpscreen.ini(5)'s order, values, accepted by --check.
    r = harness.run_smtpscreen(["--print-config", "-c", good])
    check(r.returncode == 0, f"--print-config exited {r.returncode}:\n{r.stdout}{r.stderr}")
    printed, section, values = [], None, {}
    for ln in r.stdout.splitlines():
        s = ln.strip()
        if not s or s.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", s)
        if m:
            section = m.group(1)
            continue
        m = re.fullmatch(r"([\w.]+)\s*=\s*(.*)", s)
        check(m and section, f"--print-config: line {ln!r} is not 'key = value' inside a section")
        printed.append(f"{section}.{m.group(1)}")
        values[f"{section}.{m.group(1)}"] = m.group(2)
    missing_keys = [k for k in DOCUMENTED_KEYS if k not in printed]
    check(not missing_keys, f"--print-config does not print {missing_keys}")
    extra = [k for k in printed if k not in DOCUMENTED_KEYS]
    check(not extra, f"--print-config prints keys that are not in smtpscreen.ini(5): {extra}")
    check(printed == DOCUMENTED_KEYS, f"--print-config order differs from smtpscreen.ini(5): {printed}")
    check(values["greet.wait"] in ("3s", "3000ms"), f"--print-config greet.wait = {values['greet.wait']!r}, expected 3s")
    check(values["dnsbl.allowlist_threshold"] == "-1", f"dnsbl.allowlist_threshold = {values['dnsbl.allowlist_threshold']!r}")
    check(values["backend.handoff"] == "proxy-v2", f"default backend.handoff printed as {values['backend.handoff']!r}")
    check(values["greet.action"] == "enforce", f"default greet.action printed as {values['greet.action']!r}")
    printed_path = write(env, "printed.ini", r.stdout)
    rc, out = run("--check", "-c", printed_path)
    check(rc == 0, f"--check rejects the output of --print-config (rc {rc}):\n{out}")
    r2 = harness.run_smtpscreen(["--print-config", "-c", printed_path])

    def settings(text):
        return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", ";"))]
    check(settings(r2.stdout) == settings(r.stdout),
          "--print-config of the printed config differs from the first print (comments aside)")

    # handoff = none: refused, unless the override key says yes; then it warns at start.
    none = write(env, "none.ini", "[backend]\nhandoff = none\n")
    rc, out = run("--check", "-c", none)
    check(rc == 1 and re.search(rf"{re.escape(none)}:2\b.*backend\.handoff", out),
          f"handoff = none without the override: --check must exit 1 naming {none}:2 backend.handoff, got rc {rc}:\n{out}")
    check(re.search(r"open.relay|i_know_this_is_an_open_relay", out, re.I),
          f"the handoff = none error must say why (open relay) and what to set:\n{out}")
    backend = harness.scripted_backend(env, "smtp")
    screen = env.smtpscreen(start=False, name="none", settings={
        "backend.handoff": "none", "backend.i_know_this_is_an_open_relay": "yes",
        "backend.address": f"127.0.0.1:{backend.port}"})
    rc, out = run("--check", "-c", screen.config_path)
    check(rc == 0, f"handoff = none with i_know_this_is_an_open_relay = yes: --check must exit 0, got {rc}:\n{out}")
    screen.start()
    screen.wait_for_log(r"(?i)open.relay", timeout=3)
    screen.stop()

    # Starting with a bad file fails at once and never listens.
    r = harness.run_smtpscreen(["-c", bad], timeout=20)
    check(r.returncode != 0, f"smtpscreen started with a bad config (rc {r.returncode})")
    check(re.search(rf"{re.escape(bad)}:6\b.*greet\.wait", r.stdout + r.stderr),
          f"starting with a bad config must report the errors:\n{r.stdout}{r.stderr}")

    # --version and --help
    for arg in ("--version", "--help"):
        rc, out = run(arg)
        check(rc == 0 and out.strip(), f"{arg}: rc {rc}, output {out!r}")


harness.run(main)
