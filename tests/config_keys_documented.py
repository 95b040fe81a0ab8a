#!/usr/bin/env python3
"""Every key of smtpscreen's key table (smtpscreen --list-keys) is documented:
  - docs/config-keys.txt is exactly the --list-keys output (section.key, default, what
    it is), so a key added, removed or renamed in the table shows up in review;
  - conf/smtpscreen.ini, which documents every key with its default, sets each one
    under its [section], and sets no key the table does not have;
  - the man page source doc/smtpscreen.ini.5.scd names each one as section.key
    (tests/integration/test_manual_documents_every_key.py checks that its entries are
    the keys, no more, in the rendered page).

usage: config_keys_documented.py SMTPSCREEN SOURCE_ROOT
To refresh the list after changing the table:
    build/smtpscreen --list-keys > docs/config-keys.txt"""
import os
import re
import subprocess
import sys


def ini_keys(path):
    """section.key for every "key = value" line of an INI file (indented lines continue a value)."""
    keys = []
    section = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line[0] in "#;" or line[0] in " \t":
                continue
            m = re.match(r"\[(\w+)\]", line)
            if m:
                section = m.group(1)
                continue
            m = re.match(r"(\w+)\s*=", line)
            if m and section:
                keys.append(f"{section}.{m.group(1)}")
    return keys


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    smtpscreen, root = sys.argv[1], sys.argv[2]
    listed = subprocess.run([smtpscreen, "--list-keys"], check=True, capture_output=True, text=True).stdout
    keys = [line.split("\t")[0] for line in listed.splitlines()]
    problems = []
    if len(keys) != len(set(keys)) or not keys:
        problems.append(f"--list-keys lists {len(keys)} keys, {len(set(keys))} distinct")
    for line in listed.splitlines():
        if line.count("\t") != 2 or not line.split("\t")[2]:
            problems.append(f"--list-keys line is not key<TAB>default<TAB>doc: {line!r}")

    doc_path = os.path.join(root, "docs", "config-keys.txt")
    with open(doc_path, encoding="utf-8") as f:
        documented = f.read()
    if documented != listed:
        old, new = set(documented.splitlines()), set(listed.splitlines())
        for line in sorted(old - new):
            problems.append(f"docs/config-keys.txt has a line --list-keys no longer prints: {line!r}")
        for line in sorted(new - old):
            problems.append(f"docs/config-keys.txt lacks a line --list-keys prints: {line!r}")
        if old == new:
            problems.append("docs/config-keys.txt lists the keys in another order than --list-keys")

    shipped = ini_keys(os.path.join(root, "conf", "smtpscreen.ini"))
    for key in keys:
        if key not in shipped:
            problems.append(f"conf/smtpscreen.ini does not document {key} (add it, with its default, under [{key.split('.')[0]}])")
    for key in shipped:
        if key not in keys:
            problems.append(f"conf/smtpscreen.ini sets {key}, which is not a key")

    man = os.path.join(root, "doc", "smtpscreen.ini.5.scd")
    if os.path.exists(man):
        with open(man, encoding="utf-8") as f:
            text = f.read()
        for key in keys:
            if key not in text:
                problems.append(f"doc/smtpscreen.ini.5.scd does not name {key}")

    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s); after changing the key table: "
              f"{smtpscreen} --list-keys > docs/config-keys.txt")
        return 1
    print(f"{len(keys)} keys: docs/config-keys.txt, conf/smtpscreen.ini"
          f"{' and doc/smtpscreen.ini.5.scd' if os.path.exists(man) else ''} document each one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
