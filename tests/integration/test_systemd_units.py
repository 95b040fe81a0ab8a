#!/usr/bin/env python3
"""The shipped systemd units are valid and the service stays sandboxed.
  - `systemd-analyze verify` accepts conf/smtpscreen.service and conf/smtpscreen.socket
    (offline: no systemd needs to run). verify insists that ExecStart's program exists,
    so the copy it checks names the binary under test instead of /usr/sbin/smtpscreen;
    nothing else differs.
  - `systemd-analyze security --offline=yes` on the unmodified service rates it at most
    2.0 ("OK"); the test fails when a change raises the exposure above that.
  - The service keeps what the README promises: Type=notify, ExecReload=, a dedicated
    User=, StateDirectory=, LimitNOFILE=; the socket unit belongs to it."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(harness.HERE))
SERVICE = os.path.join(ROOT, "conf", "smtpscreen.service")
SOCKET = os.path.join(ROOT, "conf", "smtpscreen.socket")
MAX_EXPOSURE = 2.0


def analyze(*args):
    r = subprocess.run([harness.which("systemd-analyze")] + list(args), capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr


def main(env):
    exe = harness.find_smtpscreen()
    with open(SERVICE) as f:
        service = f.read()
    check("ExecStart=/usr/sbin/smtpscreen " in service, "ExecStart must run /usr/sbin/smtpscreen")
    for line in (r"^Type=notify$", r"^ExecReload=/bin/kill -HUP \$MAINPID$", r"^User=_smtpscreen$",
                 r"^StateDirectory=smtpscreen$", r"^LimitNOFILE=\d+$", r"^UMask=0077$",
                 r"^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$"):
        harness.check_search(line, service, "conf/smtpscreen.service")

    unit_dir = os.path.join(env.dir, "units")
    os.makedirs(unit_dir)
    with open(os.path.join(unit_dir, "smtpscreen.service"), "w") as f:
        f.write(service.replace("ExecStart=/usr/sbin/smtpscreen ", f"ExecStart={exe} "))
    with open(SOCKET) as src, open(os.path.join(unit_dir, "smtpscreen.socket"), "w") as dst:
        dst.write(src.read())
    # The man pages are checked by their own test; verify would look for installed ones.
    rc, out = analyze("verify", "--man=no", os.path.join(unit_dir, "smtpscreen.service"),
                      os.path.join(unit_dir, "smtpscreen.socket"))
    check(rc == 0 and not out.strip(), f"systemd-analyze verify: exit {rc}:\n{out}")

    rc, out = analyze("security", "--offline=yes", SERVICE)
    m = harness.check_search(r"Overall exposure level for smtpscreen\.service: (\d+\.\d+) (\w+)", out,
                             "systemd-analyze security")
    score = float(m.group(1))
    harness.log(f"systemd-analyze security: {score} {m.group(2)}")
    failing = [line for line in out.splitlines() if line.startswith("✗")]
    check(score <= MAX_EXPOSURE,
          f"exposure {score} {m.group(2)} is above {MAX_EXPOSURE}; what counts against it:\n" + "\n".join(failing))
    print(f"RESULT systemd-analyze security smtpscreen.service: {score} {m.group(2)}")


harness.run(main)
