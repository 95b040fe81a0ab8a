#!/usr/bin/env python3
"""Every section.key the parser knows is documented in smtpscreen.ini(5) and present in
the shipped conf/smtpscreen.ini, and the man page documents no key the parser does not
know.
  - The parser's keys are what `smtpscreen --print-config` prints for an empty file
    (every key, defaults included).
  - The man page is rendered from doc/smtpscreen.ini.5.scd with scdoc, as the build
    does; each key must be the heading of an entry (a line of its own, in bold).
  - conf/smtpscreen.ini must set each key under its [section] (the shipped file shows
    every key with its default).
  - smtpscreen(8) renders too and names the signals and the configuration file."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(harness.HERE))


def ini_keys(text):
    keys, section = [], None
    for line in text.splitlines():
        line = line.strip()
        m = re.fullmatch(r"\[([a-z_]+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"([a-z_]+)\s*=", line)
        if m and section:
            keys.append(f"{section}.{m.group(1)}")
    return keys


def render(page):
    path = os.path.join(ROOT, "doc", page + ".scd")
    with open(path) as f:
        r = subprocess.run([harness.which("scdoc")], stdin=f, capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"scdoc {path}: {r.stderr}")
    plain = re.sub(r"\\&|\\f[BIRP]", "", r.stdout)
    return r.stdout, plain


def main(env):
    empty = os.path.join(env.dir, "empty.ini")
    open(empty, "w").close()
    r = harness.run_smtpscreen(["-c", empty, "--print-config"])
    check(r.returncode == 0, f"--print-config of an empty file: {r.returncode} {r.stderr}")
    parser_keys = ini_keys(r.stdout)
    check(len(parser_keys) > 40, f"--print-config listed only {len(parser_keys)} keys:\n{r.stdout}")

    roff, plain = render("smtpscreen.ini.5")
    headings = set(re.findall(r"^\\fB([a-z_]+\.\\&[a-z_]+)\\fR$", roff, re.M))
    documented = {h.replace("\\&", "") for h in headings}
    missing = [k for k in parser_keys if k not in documented]
    check(not missing, f"smtpscreen.ini(5) has no entry for {', '.join(missing)} (add *section.key* and its "
                       f"meaning to doc/smtpscreen.ini.5.scd)")
    unknown = sorted(documented - set(parser_keys))
    check(not unknown, f"smtpscreen.ini(5) documents keys the parser does not know: {', '.join(unknown)}")

    with open(os.path.join(ROOT, "conf", "smtpscreen.ini")) as f:
        shipped = set(ini_keys(f.read()))
    missing = [k for k in parser_keys if k not in shipped]
    check(not missing, f"conf/smtpscreen.ini does not show {', '.join(missing)} (each key with its default)")

    _, plain8 = render("smtpscreen.8")
    for word in ("SIGHUP", "SIGTERM", "/etc/smtpscreen/smtpscreen.ini", "--check", "smtpscreen.socket"):
        check(word in plain8, f"smtpscreen(8) does not mention {word}")
    harness.log(f"{len(parser_keys)} keys documented in smtpscreen.ini(5) and conf/smtpscreen.ini")


harness.run(main)
