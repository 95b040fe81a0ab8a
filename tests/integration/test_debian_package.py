#!/usr/bin/env python3
"""`dpkg-buildpackage -us -uc -b` builds a .deb from the tree that an admin can install.
  - The package is built from a copy of the source tree (no build directories), with
    the unit tests as the build's check.
  - Its files: /usr/sbin/smtpscreen, smtpscreen(8) and smtpscreen.ini(5), the example
    /etc/smtpscreen/smtpscreen.ini (a conffile), the units in /lib/systemd/system.
  - Depends comes from ${shlibs:Depends}: for every shared library the packaged binary
    needs (its DT_NEEDED entries), the Debian package that ships it is named; adduser
    is there for postinst.
  - postinst creates the system user _smtpscreen (adduser --system) and enables and
    starts smtpscreen.socket and smtpscreen.service (dh_installsystemd).
  - The packaged binary accepts the packaged configuration (--check) and the installed
    configuration keeps its cache in the unit's StateDirectory.
Slow (a full package build): it has its own timeout in meson, and runs only once per
suite (skipped for the ASan build's binary)."""
import glob
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(harness.HERE))


def run(cmd, cwd=None, timeout=60, env=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    return r


def main(env):
    # The package is built from the tree with its own flags, not from the binary under
    # test: once per suite (the normal build) is enough.
    if harness.is_sanitized_binary():
        raise harness.Skip("the package build does not depend on the sanitized binary; it runs with build/")
    for prog in ("dpkg-buildpackage", "dh", "dpkg-deb", "dpkg-shlibdeps"):
        harness.which(prog)
    src = os.path.join(env.dir, "smtpscreen")
    shutil.copytree(ROOT, src, symlinks=True,
                    ignore=lambda d, names: [n for n in names if d == ROOT and (n.startswith("build") or
                                                                                 n in (".git", "obj-x86_64-linux-gnu"))])
    harness.log("dpkg-buildpackage -us -uc -b ...")
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, timeout=900,
            env=dict(os.environ, DEB_BUILD_OPTIONS="parallel=2"))
    with open(os.path.join(env.dir, "dpkg-buildpackage.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    check(r.returncode == 0, f"dpkg-buildpackage failed ({r.returncode}):\n{harness.tail(r.stdout + r.stderr, 60)}")
    debs = glob.glob(os.path.join(env.dir, "smtpscreen_*.deb"))
    check(len(debs) == 1, f"expected one smtpscreen_*.deb, found {debs}")
    deb = debs[0]
    harness.log(f"built {os.path.basename(deb)}")

    listing = run(["dpkg-deb", "-c", deb]).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines() if line.strip()}
    for path in ("/usr/sbin/smtpscreen", "/usr/share/man/man8/smtpscreen.8.gz",
                 "/usr/share/man/man5/smtpscreen.ini.5.gz", "/etc/smtpscreen/smtpscreen.ini",
                 "/lib/systemd/system/smtpscreen.service", "/lib/systemd/system/smtpscreen.socket"):
        check(path in files, f"the package lacks {path}; it has:\n{listing}")
    strays = [f for f in files if re.search(r"unit_tests|smtpload|fuzz|/usr/local/|/include/", f)]
    check(not strays, f"the package ships files that are not for admins: {strays}")

    control = os.path.join(env.dir, "control")
    extracted = os.path.join(env.dir, "root")
    run(["dpkg-deb", "-e", deb, control])
    run(["dpkg-deb", "-x", deb, extracted])
    with open(os.path.join(control, "conffiles")) as f:
        check("/etc/smtpscreen/smtpscreen.ini" in f.read().split(), "the INI is not a conffile")

    depends = run(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    harness.log(f"Depends: {depends}")
    dep_names = {re.split(r"[ (]", d.strip())[0] for alt in depends.split(",") for d in alt.split("|")}
    check("adduser" in dep_names, f"Depends lacks adduser (postinst runs it): {depends}")
    binary = os.path.join(extracted, "usr", "sbin", "smtpscreen")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run(["readelf", "-d", binary]).stdout)
    check(len(needed) >= 8, f"the binary needs only {needed}?")
    for lib in needed:
        r = run(["dpkg", "-S", lib])
        owners = {line.split(":")[0] for line in r.stdout.splitlines() if f"/{lib}" in line}
        check(owners, f"no installed package ships {lib}: {r.stdout}{r.stderr}")
        check(owners & dep_names, f"{lib} comes from {sorted(owners)}, none of which is in Depends: {depends}")

    with open(os.path.join(control, "postinst")) as f:
        postinst = f.read()
    adduser = harness.check_search(r"adduser --system[^\n]*(\\\n[^\n]*)*_smtpscreen", postinst, "postinst")
    for unit in ("smtpscreen.socket", "smtpscreen.service"):
        harness.check_search(rf"deb-systemd-helper enable '{re.escape(unit)}'", postinst, f"postinst enabling {unit}")
    starts = [(m.start(), m.group(0)) for m in
              re.finditer(r"deb-systemd-invoke (start|\$_dh_action) [^\n]*", postinst)]
    socket_start = [pos for pos, line in starts if "'smtpscreen.socket'" in line]
    service_start = [pos for pos, line in starts if "'smtpscreen.service'" in line]
    check(socket_start and service_start, f"postinst must start both units: {starts}")
    check(socket_start[0] < service_start[0], "postinst must start smtpscreen.socket before smtpscreen.service")
    check(adduser.start() < starts[0][0], "postinst must create _smtpscreen before it starts the units")
    check(not re.search(r"restart[^\n]*'smtpscreen\.socket'|_dh_action[^\n]*'smtpscreen\.socket'", postinst),
          "an upgrade must not restart smtpscreen.socket (that closes the port)")
    check(postinst.count("exit 0") == 1 and postinst.count("adduser --system") == 1,
          "postinst has its parts more than once (a #DEBHELPER# token in a comment?)")

    ini = os.path.join(extracted, "etc", "smtpscreen", "smtpscreen.ini")
    with open(ini) as f:
        text = f.read()
    harness.check_search(r"^path = /var/lib/smtpscreen/", text, "the installed INI's cache.path")
    r = run([binary, "-c", ini, "--check"])
    check(r.returncode == 0, f"the packaged binary refuses the packaged configuration:\n{r.stdout}{r.stderr}")
    print(f"RESULT {os.path.basename(deb)}: {len(files)} paths, Depends: {depends}")


harness.run(main, timeout=890)
