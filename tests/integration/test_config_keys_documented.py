#!/usr/bin/env python3
"""Every key of smtpscreen's key table (`smtpscreen --list-keys`) is documented, in each
place an admin or a reviewer looks, and nothing documents a key the table does not have:
  - --list-keys prints one distinct "section.key<TAB>default<TAB>what it is" per key, and
    --print-config of an empty file prints the same keys in the same order (one table
    drives both);
  - docs/config-keys.txt is exactly the --list-keys output, so a key added, removed or
    renamed in the table shows up in review;
  - conf/smtpscreen.ini, which shows every key with its default, sets each one under its
    [section], and sets no key the table does not have;
  - smtpscreen.ini(5), rendered from doc/smtpscreen.ini.5.scd with scdoc as the build
    does, has an entry (the key in bold on a line of its own) for each key, and none for
    a key the table does not have;
  - smtpscreen(8) renders too and names the signals and the configuration file.
After changing the key table: build/smtpscreen --list-keys > docs/config-keys.txt"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(harness.HERE))


def source(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def render(page):
    """(roff, plain text) of doc/PAGE.scd rendered by scdoc."""
    path = os.path.join(ROOT, "doc", page + ".scd")
    with open(path) as f:
        r = subprocess.run([harness.which("scdoc")], stdin=f, capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"scdoc {path}: {r.stderr}")
    return r.stdout, re.sub(r"\\&|\\f[BIRP]", "", r.stdout)


def main(env):
    problems = []

    r = harness.run_smtpscreen(["--list-keys"])
    check(r.returncode == 0, f"--list-keys exited {r.returncode}: {r.stderr}")
    listed = r.stdout
    keys = [line.split("\t")[0] for line in listed.splitlines()]
    check(len(keys) > 40, f"--list-keys listed only {len(keys)} keys:\n{listed}")
    if len(keys) != len(set(keys)):
        problems.append(f"--list-keys lists {len(keys)} keys, {len(set(keys))} distinct")
    for line in listed.splitlines():
        if line.count("\t") != 2 or not line.split("\t")[2]:
            problems.append(f"--list-keys line is not key<TAB>default<TAB>doc: {line!r}")

    empty = os.path.join(env.dir, "empty.ini")
    open(empty, "w").close()
    r = harness.run_smtpscreen(["-c", empty, "--print-config"])
    check(r.returncode == 0, f"--print-config of an empty file: {r.returncode} {r.stderr}")
    printed = harness.ini_keys(r.stdout)
    if printed != keys:
        problems.append(f"--print-config prints other keys than --list-keys: "
                        f"{sorted(set(printed) ^ set(keys)) or 'the same keys in another order'}")

    documented = source("docs", "config-keys.txt")
    if documented != listed:
        old, new = set(documented.splitlines()), set(listed.splitlines())
        for line in sorted(old - new):
            problems.append(f"docs/config-keys.txt has a line --list-keys no longer prints: {line!r}")
        for line in sorted(new - old):
            problems.append(f"docs/config-keys.txt lacks a line --list-keys prints: {line!r}")
        if old == new:
            problems.append("docs/config-keys.txt lists the keys in another order than --list-keys")

    shipped = harness.ini_keys(source("conf", "smtpscreen.ini"))
    for key in keys:
        if key not in shipped:
            problems.append(f"conf/smtpscreen.ini does not show {key} "
                            f"(add it, with its default, under [{key.split('.')[0]}])")
    for key in shipped:
        if key not in keys:
            problems.append(f"conf/smtpscreen.ini sets {key}, which is not a key")

    roff, _ = render("smtpscreen.ini.5")
    headings = set(re.findall(r"^\\fB([a-z_]+\.\\&[a-z_]+)\\fR$", roff, re.M))
    entries = {h.replace("\\&", "") for h in headings}
    for key in keys:
        if key not in entries:
            problems.append(f"smtpscreen.ini(5) has no entry for {key} "
                            f"(add *{key}* and its meaning to doc/smtpscreen.ini.5.scd)")
    for key in sorted(entries - set(keys)):
        problems.append(f"smtpscreen.ini(5) documents {key}, which is not a key")

    _, plain8 = render("smtpscreen.8")
    for word in ("SIGHUP", "SIGTERM", "/etc/smtpscreen/smtpscreen.ini", "--check", "smtpscreen.socket"):
        if word not in plain8:
            problems.append(f"smtpscreen(8) does not mention {word}")

    check(not problems, "\n".join(problems) + f"\n{len(problems)} problem(s); after changing the key "
                        f"table: {harness.find_smtpscreen()} --list-keys > docs/config-keys.txt")
    harness.log(f"{len(keys)} keys: docs/config-keys.txt, conf/smtpscreen.ini and smtpscreen.ini(5) "
                f"document each one")


harness.run(main)
