#!/usr/bin/env python3
"""After binding, smtpscreen runs as process.user with that user's groups and no
capability but CAP_NET_BIND_SERVICE, and SIGHUP still reads files it can reach only
through one of those groups (a TLS key 0640 root:GROUP, as with Debian's ssl-cert).
  - A test user and group are created; the user is a member of the group. The key is
    0640 root:GROUP. smtpscreen starts as root with process.user = that user and two
    threads; /proc/PID/task/*/status of every thread shows the user's uid and gid in all
    four slots, the group among the supplementary groups (initgroups) and no root group,
    CapEff = CapPrm = CapBnd = CAP_NET_BIND_SERVICE alone, nothing inheritable or ambient.
  - A new certificate and key (again 0640 root:GROUP) and a listen.address below 1024,
    and SIGHUP: reloaded, no error, the new port accepts (CAP_NET_BIND_SERVICE kept).
  - A key that only root may read (0600) and SIGHUP: refused naming the key, and
    `--check` run as root warns that process.user cannot read it, and so does a start
    with it; with the key back to 0640 root:GROUP, `--check` warns about nothing.
  - systemd's LoadCredential=: with $CREDENTIALS_DIRECTORY set, tls.cert and tls.key given
    as bare names are read from that directory."""
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CAP_NET_BIND_SERVICE = 10


def proc_fields(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def make_user(env):
    if os.geteuid() != 0:
        raise harness.Skip("needs root to create a test user and group")
    harness.need_programs("useradd", "groupadd", "userdel", "groupdel")
    tag = f"{os.getpid() % 100000}"
    group, user = f"ssit-keys{tag}", f"ssit-user{tag}"
    subprocess.run(["groupadd", "--system", group], check=True)
    env.add_cleanup(lambda: subprocess.run(["groupdel", group], check=False))
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", "--groups", group, user], check=True)
    env.add_cleanup(lambda: subprocess.run(["userdel", user], check=False))
    import grp
    import pwd
    pw = pwd.getpwnam(user)
    return user, pw.pw_uid, pw.pw_gid, grp.getgrnam(group).gr_gid


def install(cert, tls_dir, gid, key_mode=0o640):
    for src, name, mode in ((cert.cert, "cert.pem", 0o644), (cert.key, "key.pem", key_mode)):
        dst = os.path.join(tls_dir, name)
        shutil.copyfile(src, dst + ".new")
        os.chown(dst + ".new", 0, gid)
        os.chmod(dst + ".new", mode)
        os.replace(dst + ".new", dst)


def free_low_port():
    """A port below 1024 that is free on 127.0.0.1 (only root or CAP_NET_BIND_SERVICE may bind it)."""
    import socket
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise harness.Skip("no free port below 1024 on 127.0.0.1")


def main(env):
    user, uid, gid, keys_gid = make_user(env)
    ca = harness.make_test_ca(env)
    a = ca.issue("mx-a.test", "ecdsa")
    b = ca.issue("mx-b.test", "ecdsa")
    tls_dir = os.path.join(env.dir, "tls")
    os.makedirs(tls_dir)
    os.chmod(tls_dir, 0o755)
    install(a, tls_dir, keys_gid)
    cert_path, key_path = os.path.join(tls_dir, "cert.pem"), os.path.join(tls_dir, "key.pem")

    screen = env.smtpscreen(start=False, settings={
        "tls.cert": cert_path, "tls.key": key_path,
        "cache.backend": "memory", "cache.path": None,
        "process.user": user, "process.threads": "2"})
    os.chmod(screen.dir, 0o755)
    screen.start()
    screen.wait_for_log(r"listening on ")

    bind_only = f"{1 << CAP_NET_BIND_SERVICE:016x}"
    tasks = sorted(os.listdir(f"/proc/{screen.pid}/task"))
    check(len(tasks) >= 2, f"process.threads = 2 but only threads {tasks}")
    for tid in tasks:
        st = proc_fields(f"/proc/{screen.pid}/task/{tid}/status")
        harness.log(f"thread {tid}: Uid {st['Uid']} Gid {st['Gid']} Groups {st['Groups']} "
                    f"CapEff {st['CapEff']} CapPrm {st['CapPrm']} CapBnd {st['CapBnd']}")
        check(st["Uid"] == [str(uid)] * 4, f"thread {tid}: Uid {st['Uid']}, expected {uid} four times")
        check(st["Gid"] == [str(gid)] * 4, f"thread {tid}: Gid {st['Gid']}, expected {gid} four times")
        groups = set(st.get("Groups", []))
        check(str(keys_gid) in groups,
              f"thread {tid}: supplementary groups {sorted(groups)} lack {keys_gid} ({user} is a member: initgroups)")
        check("0" not in groups, f"thread {tid}: still in group root: {sorted(groups)}")
        for field in ("CapEff", "CapPrm", "CapBnd"):
            check(st[field] == [bind_only], f"thread {tid}: {field} {st[field]}, expected {bind_only} "
                                            f"(CAP_NET_BIND_SERVICE alone)")
        for field in ("CapInh", "CapAmb"):
            check(int(st[field][0], 16) == 0, f"thread {tid}: {field} {st[field]}, expected none")

    # A new pair, the key readable through the group only, and a privileged port: the
    # reload works as the user.
    install(b, tls_dir, keys_gid)
    low = free_low_port()
    screen.settings["listen.address"] = f"127.0.0.1:{low}"
    screen.write_config()
    since = screen.log_size()
    screen.signal(signal.SIGHUP)
    screen.wait_for_log(r"SIGHUP: reloaded ", since=since)
    screen.check_no_log(r"(?i)error|permission denied", since=since)
    harness.wait_until(lambda: harness.port_listening("127.0.0.1", low), 10,
                       what=f"the new listen.address 127.0.0.1:{low} open as {user}")
    screen.port = low

    # A root-only key: refused, named; --check as root says process.user cannot read it.
    install(a, tls_dir, 0, key_mode=0o600)
    since = screen.log_size()
    screen.signal(signal.SIGHUP)
    screen.wait_for_log(rf"{key_path}.*(?i:permission denied)", since=since)
    screen.wait_for_log(r"SIGHUP: .*keeping the settings in use", since=since)
    check(screen.running(), "smtpscreen exited after a refused SIGHUP")
    r = screen.run_cli("-c", screen.config_path, "--check")
    check(r.returncode == 0, f"--check as root must pass (root reads the key): {r.stdout}{r.stderr}")
    harness.check_search(rf"^warning: {key_path}: Permission denied .*process.user \"{user}\"", r.stderr,
                         "--check run as root with a key process.user cannot read")
    check(cert_path not in r.stderr, f"--check must not warn about the readable certificate:\n{r.stderr}")

    screen.stop()
    screen.start(wait=False)
    screen.wait_for_log(rf"warning: {key_path}: Permission denied .*process.user \"{user}\"",
                        since=screen.log_offset_at_start)
    screen.wait_for_log(r" started: ", since=screen.log_offset_at_start)

    install(a, tls_dir, keys_gid)
    r = screen.run_cli("-c", screen.config_path, "--check")
    check(r.returncode == 0 and "warning" not in r.stderr,
          f"--check with the key 0640 root:group must warn about nothing:\n{r.stdout}{r.stderr}")

    # LoadCredential=: bare names are looked up in $CREDENTIALS_DIRECTORY.
    creds = os.path.join(env.dir, "credentials")
    os.makedirs(creds)
    shutil.copyfile(b.cert, os.path.join(creds, "tls.cert"))
    shutil.copyfile(b.key, os.path.join(creds, "tls.key"))
    ini = os.path.join(env.dir, "credentials.ini")
    with open(ini, "w") as f:
        f.write("[tls]\ncert = tls.cert\nkey = tls.key\n")
    cli = [harness.find_smtpscreen(), "-c", ini, "--check"]
    r = subprocess.run(cli, capture_output=True, text=True, cwd=env.dir,
                       env=dict(os.environ, CREDENTIALS_DIRECTORY=creds), timeout=30)
    check(r.returncode == 0, f"bare tls.cert/tls.key names with CREDENTIALS_DIRECTORY: {r.stdout}{r.stderr}")
    env_without = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    r = subprocess.run(cli, capture_output=True, text=True, cwd=env.dir, env=env_without, timeout=30)
    check(r.returncode == 1, f"without CREDENTIALS_DIRECTORY the bare names are not there: {r.stdout}{r.stderr}")
    screen.stop()


harness.run(main)
