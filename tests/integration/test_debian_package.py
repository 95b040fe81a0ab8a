#!/usr/bin/env python3
"""`dpkg-buildpackage -us -uc -b` builds a .deb from the tree that an admin can install.
  - The package is built from a copy of the source tree (no build directories), with
    the unit tests as the build's check.
  - Its files: /usr/sbin/smtpscreen, smtpscreen(8) and smtpscreen.ini(5), the example
    /etc/smtpscreen/smtpscreen.ini (a conffile), the units in /lib/systemd/system, the
    fail2ban filter and jail in /etc/fail2ban/filter.d and jail.d (conffiles).
  - Depends comes from ${shlibs:Depends}: for every shared library the packaged binary
    needs (its DT_NEEDED entries), the Debian package that ships it is named; adduser
    is there for postinst.
  - postinst creates the system user _smtpscreen (adduser --system) and enables and
    starts smtpscreen.socket and smtpscreen.service (dh_installsystemd).
  - The packaged binary accepts the packaged configuration (--check) and the installed
    configuration keeps its cache in the unit's StateDirectory.
  - Installed on a booted Debian 12 (a minbase root with systemd 252 as pid 1 of its
    own namespaces: tests/lib/smtptest/debian_machine.py), `apt-get install
    ./smtpscreen_*.deb` pulls its Depends, creates _smtpscreen, and starts
    smtpscreen.socket and smtpscreen.service: both are active, the process runs as
    _smtpscreen with only CAP_NET_BIND_SERVICE, its start logs no warning but the
    shipped INI's tls.passthrough advice (it has no certificate), and `systemd-analyze
    verify` and `security` pass on the installed units. With the README's drop-in for
    port 25 it greets 220 there (in the machine's own network namespace), answers again
    after `systemctl reload`, stops with status 0, and `apt-get purge` leaves none of
    its files behind.
Slow (a full package build, and the first time a root file system from the mirror): it
has its own timeout in meson, and runs only once per suite (skipped for the ASan
build's binary)."""
import glob
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(harness.HERE))


def run(cmd, cwd=None, timeout=60, env=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    return r

# The admin's drop-in for port 25, as the README and smtpscreen(8) give it.
PORT_25_DROPIN = "[Socket]\nListenStream=\nListenStream=0.0.0.0:25\nListenStream=[::]:25\n"
# Reads the first line a client gets (the banner) and hangs up without a word.
BANNER_PROBE = """import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
print(s.makefile("rb").readline().decode(errors="replace").rstrip())
"""
CAP_NET_BIND_SERVICE = 1 << 10
# The shipped INI leaves tls.cert empty (an admin's certificate is not known), so the
# start warns, on purpose, that STARTTLS then passes through unfiltered; any other
# warning or error at start fails.
EXPECTED_WARNING = r"^warning: /etc/smtpscreen/smtpscreen\.ini: tls\.passthrough: on and tls\.cert is empty: "


def banner(machine, host, port):
    r = machine.in_netns(sys.executable, "-c", BANNER_PROBE, host, str(port))
    check(r.returncode == 0, f"connecting to {host}:{port} in the machine failed:\n{r.stdout}{r.stderr}")
    return r.stdout.strip()


def tcp_listeners(machine):
    """The machine's listening TCP ports, read from its network namespace."""
    ports = set()
    for name in ("tcp", "tcp6"):
        with open(f"/proc/{machine.pid1}/net/{name}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def unit_properties(machine, unit, *names):
    out = machine.must("systemctl", "show", unit, "-p", ",".join(names))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


HOST_NODES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


def node_owners():
    return {path: (st.st_mode, st.st_uid, st.st_gid) for path in HOST_NODES for st in [os.stat(path)]}


def starts_under_systemd(env, root, deb, limit):
    # The machine sees these host nodes through bind mounts; its systemd must not
    # re-own them (a console bound to /dev/null once left the host's 0620 root:tty).
    before = node_owners()
    with harness.BootedDebian(env, root, deb, limit) as machine:
        check_installed_service(env, machine, deb)
    after = node_owners()
    check(after == before, f"the machine changed host device nodes: {before} -> {after}")


def check_installed_service(env, machine, deb):
    state = machine.wait_booted(300)
    check(state == "running", f"the machine booted to {state!r}, not running; failed units:\n"
                              f"{machine.run('systemctl', '--failed', '--no-pager').stdout}")
    systemd_version = machine.must("systemctl", "--version").split("\n")[0]
    harness.log(f"booted: {systemd_version} as pid 1 (host pid {machine.pid1})")

    # What an admin types; the Depends were fetched before the boot (the machine has no
    # network), so apt must find them all in its cache.
    r = machine.run("apt-get", "install", "-y", machine.deb_in_machine, timeout=240)
    with open(os.path.join(env.dir, "apt-get-install.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    check(r.returncode == 0, f"apt-get install of the package failed ({r.returncode}):\n"
                             f"{harness.tail(r.stdout + r.stderr, 40)}")
    harness.log("apt-get install ./" + os.path.basename(deb) + ": done")

    active = machine.run("systemctl", "is-active", "smtpscreen.socket", "smtpscreen.service").stdout.split()
    check(active == ["active", "active"], f"after install smtpscreen.socket and .service are {active}:\n"
          f"{machine.run('systemctl', 'status', '--no-pager', 'smtpscreen.service').stdout}")
    enabled = machine.run("systemctl", "is-enabled", "smtpscreen.socket", "smtpscreen.service").stdout.split()
    check(enabled == ["enabled", "enabled"], f"after install the units are {enabled}, not enabled")
    check(2525 in tcp_listeners(machine), f"the packaged socket (127.0.0.1:2525) is not listening in the machine: "
                                          f"{sorted(tcp_listeners(machine))}")

    user = machine.must("getent", "passwd", "_smtpscreen").strip().split(":")
    check(int(user[2]) < 1000 and user[5] == "/var/lib/smtpscreen" and user[6] == "/usr/sbin/nologin",
          f"_smtpscreen is not the system user postinst promises: {user}")
    group = machine.must("getent", "group", "_smtpscreen").strip().split(":")
    check(group[2] == user[3], f"_smtpscreen's primary group is not _smtpscreen: {user} {group}")

    service = unit_properties(machine, "smtpscreen.service", "MainPID", "NRestarts")
    check(service["NRestarts"] == "0", f"smtpscreen.service restarted {service['NRestarts']} times")
    status = machine.must("cat", f"/proc/{service['MainPID']}/status")
    uids = harness.check_search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, "the service's status")
    check(set(uids.groups()) == {user[2]}, f"the service does not run as _smtpscreen ({user[2]}): {uids.group(0)}")
    caps = int(harness.check_search(r"^CapEff:\s+([0-9a-f]+)", status, "the service's status").group(1), 16)
    check(caps == CAP_NET_BIND_SERVICE, f"the service keeps capabilities {caps:#x}, not only CAP_NET_BIND_SERVICE")
    state_dir = machine.must("stat", "-c", "%U %a", "/var/lib/smtpscreen").split()
    check(state_dir == ["_smtpscreen", "700"], f"/var/lib/smtpscreen is {state_dir}, not _smtpscreen 0700")

    journal = machine.must("journalctl", "-b", "-u", "smtpscreen.service", "--no-pager", "-o", "cat")
    harness.check_search(r"^smtpscreen \S+ started: config /etc/smtpscreen/smtpscreen\.ini, user _smtpscreen, "
                         r"listening on 127\.0\.0\.1:2525 \(socket activation\)", journal,
                         "the start-up line in the journal")
    warnings = [line for line in machine.must("journalctl", "-b", "-u", "smtpscreen.service", "-p", "warning",
                                              "--no-pager", "-o", "cat").splitlines()
                if not re.search(EXPECTED_WARNING, line)]
    check(not warnings, "the installed service's start logs warnings or errors:\n" + "\n".join(warnings))

    # The installed units, checked by the machine's own systemd (with the files in place).
    machine.must("systemd-analyze", "verify", "--man=no", "smtpscreen.socket", "smtpscreen.service")
    security = machine.must("systemd-analyze", "security", "--no-pager", "smtpscreen.service")
    score = harness.check_search(r"Overall exposure level for smtpscreen\.service: (\d+\.\d+) (\w+)", security,
                                 "systemd-analyze security in the machine")
    check(float(score.group(1)) <= 2.0, f"the installed service rates {score.group(1)} {score.group(2)}")
    harness.log(f"systemd-analyze security on the installed unit: {score.group(1)} {score.group(2)}")

    # Port 25, the way the README tells an admin to open it.
    machine.write_file("/etc/systemd/system/smtpscreen.socket.d/port-25.conf", PORT_25_DROPIN)
    machine.must("systemctl", "daemon-reload")
    machine.must("systemctl", "stop", "smtpscreen.service", "smtpscreen.socket")
    machine.must("systemctl", "start", "smtpscreen.socket", "smtpscreen.service")
    listening = tcp_listeners(machine)
    check(25 in listening and 2525 not in listening, f"after the drop-in the machine listens on {sorted(listening)}")
    for host in ("127.0.0.1", "::1"):
        line = banner(machine, host, 25)
        check(line.startswith("220"), f"{host} port 25 in the machine greeted {line!r}, not 220")
    harness.log(f"port 25 greets: {line}")
    harness.check_search(r"listening on [^\n]*:25\b[^\n]* \(socket activation\)",
                         machine.must("journalctl", "-b", "-u", "smtpscreen.service", "--no-pager", "-o", "cat"),
                         "the start-up line after the drop-in")

    pid = unit_properties(machine, "smtpscreen.service", "MainPID")["MainPID"]
    machine.must("systemctl", "reload", "smtpscreen.service")
    after = unit_properties(machine, "smtpscreen.service", "MainPID", "ActiveState")
    check(after == {"MainPID": pid, "ActiveState": "active"}, f"after a reload the service is {after} (was pid {pid})")
    harness.wait_until(lambda: "SIGHUP: reloaded" in machine.must("journalctl", "-b", "-u", "smtpscreen.service",
                                                                  "--no-pager", "-o", "cat"),
                       10, interval=0.5, what="the reload's log line")
    line = banner(machine, "127.0.0.1", 25)
    check(line.startswith("220"), f"after the reload port 25 greeted {line!r}")

    machine.must("systemctl", "stop", "smtpscreen.service", "smtpscreen.socket", timeout=90)
    stopped = unit_properties(machine, "smtpscreen.service", "ActiveState", "Result", "ExecMainStatus")
    check(stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"},
          f"smtpscreen.service did not stop cleanly: {stopped}")
    check(25 not in tcp_listeners(machine), "port 25 is still open after systemctl stop")

    # The drop-in is the admin's; purge removes what the package put there.
    machine.must("rm", "-r", "/etc/systemd/system/smtpscreen.socket.d")
    r = machine.run("apt-get", "purge", "-y", "smtpscreen", timeout=120)
    check(r.returncode == 0, f"apt-get purge failed:\n{harness.tail(r.stdout + r.stderr, 30)}")
    left = machine.run("find", "/etc", "/lib/systemd", "/usr", "/var/lib", "-xdev", "-name",
                       "*smtpscreen*").stdout.split()
    check(not left, f"after apt-get purge these are left: {left}")
    check(machine.poweroff(), f"the machine's systemd did not power off cleanly:\n"
                              f"{harness.tail(harness.read_text(machine.log_path), 10)}")
    harness.log("installed, started, greeted on port 25, reloaded, stopped, purged, powered off")


def main(env):
    # The package is built from the tree with its own flags, not from the binary under
    # test: once per suite (the normal build) is enough.
    if harness.is_sanitized_binary():
        raise harness.Skip("the package build does not depend on the sanitized binary; it runs with build/")
    for prog in ("dpkg-buildpackage", "dh", "dpkg-deb", "dpkg-shlibdeps", "nsenter", "unshare"):
        harness.which(prog)
    started = time.monotonic()
    # The machine's root is built (first time only) while the package builds.
    root_build = harness.DebianRootBuild(env)
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
                 "/lib/systemd/system/smtpscreen.service", "/lib/systemd/system/smtpscreen.socket",
                 "/etc/fail2ban/filter.d/smtpscreen.conf", "/etc/fail2ban/jail.d/smtpscreen.conf"):
        check(path in files, f"the package lacks {path}; it has:\n{listing}")
    strays = [f for f in files if re.search(r"unit_tests|smtpload|fuzz|/usr/local/|/include/", f)]
    check(not strays, f"the package ships files that are not for admins: {strays}")

    control = os.path.join(env.dir, "control")
    extracted = os.path.join(env.dir, "root")
    run(["dpkg-deb", "-e", deb, control])
    run(["dpkg-deb", "-x", deb, extracted])
    with open(os.path.join(control, "conffiles")) as f:
        conffiles = f.read().split()
    for path in ("/etc/smtpscreen/smtpscreen.ini", "/etc/fail2ban/filter.d/smtpscreen.conf",
                 "/etc/fail2ban/jail.d/smtpscreen.conf"):
        check(path in conffiles, f"{path} is not a conffile: {conffiles}")

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

    root = root_build.wait(timeout=max(60, TIME_LIMIT - 180 - (time.monotonic() - started)))
    # The machine ends by itself before this test's own watchdog would fire.
    starts_under_systemd(env, root, deb, limit=int(max(120, TIME_LIMIT - 20 - (time.monotonic() - started))))


TIME_LIMIT = 1190
harness.run(main, timeout=TIME_LIMIT)
