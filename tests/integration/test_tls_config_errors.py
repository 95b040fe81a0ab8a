#!/usr/bin/env python3
"""docs/design.md, "TLS"; issue 4: tls.cert/tls.key problems are `--check` errors that name the file.
`smtpscreen --check` exits 1, its output naming the key and the file, for:
  - a missing tls.cert file, a missing tls.key file;
  - an unreadable tls.key (mode 0000, --check run as nobody) and a directory as tls.cert;
  - a certificate and key that do not belong together (names a file, says "match");
  - a file with no certificate (a key given as tls.cert) and a garbage key file;
  - a key protected by a passphrase;
  - a weak suite in tls.ciphers (3DES, RC4, NULL/MD5, PSK), naming tls.ciphers and the
    suite; a TLS version under 1.2 in tls.min_version;
  - backend.tls = on with a missing backend.tls_ca file.
It exits 0 for good RSA and ECDSA pairs, a chain file, and a strong tls.ciphers list; a
server started with tls.ciphers = one ChaCha20 suite negotiates exactly that suite.
Starting the server with a missing certificate fails without listening."""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def write(env, name, text):
    path = os.path.join(env.dir, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def ini(env, name, settings):
    base = {"listen.address": "127.0.0.1:2525", "log.syslog": "off"}
    base.update(settings)
    return write(env, name, harness.ini_text(base))


def binary_nobody_can_run(env):
    """A copy of the binary in the test's own directory: the tree may live where nobody
    cannot enter (a clone in /root, mode 0700), and the test must not depend on that."""
    folder = os.path.join(env.dir, "bin-for-nobody")
    copy = os.path.join(folder, "smtpscreen")
    if not os.path.exists(copy):
        os.makedirs(folder, mode=0o755)
        shutil.copyfile(harness.find_smtpscreen(), copy)
        os.chmod(copy, 0o755)
    return copy


def check_run(path, as_nobody=False, env=None):
    cmd = [harness.find_smtpscreen(), "--check", "-c", path]
    kw = {}
    if as_nobody:
        cmd[0] = binary_nobody_can_run(env)
        def drop():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        kw["preexec_fn"] = drop
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, **kw)
    return r.returncode, r.stdout + r.stderr


def expect_error(what, rc_out, *must):
    rc, out = rc_out
    check(rc == 1, f"{what}: --check must exit 1, got {rc}; output:\n{out}")
    for m in must:
        check(re.search(m, out), f"{what}: the --check output must match /{m}/; output:\n{out}")
    harness.log(f"{what}: rc 1: {out.strip().splitlines()[0] if out.strip() else ''}")


def expect_ok(what, rc_out):
    rc, out = rc_out
    check(rc == 0, f"{what}: --check must exit 0, got {rc}; output:\n{out}")


def main(env):
    ca = harness.make_test_ca(env)
    rsa = ca.issue("mx-rsa.test", "rsa")
    ec = ca.issue("mx-ec.test", "ecdsa")
    chain = ca.issue("mx-chain.test", "rsa", chain=True)
    E = re.escape

    # Good files pass.
    expect_ok("RSA pair", check_run(ini(env, "rsa.ini", harness.tls_settings(rsa))))
    expect_ok("ECDSA pair", check_run(ini(env, "ec.ini", harness.tls_settings(ec))))
    expect_ok("chain file", check_run(ini(env, "chain.ini", harness.tls_settings(chain))))
    strong = "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256, TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"
    expect_ok("strong tls.ciphers", check_run(ini(env, "strong.ini", harness.tls_settings(rsa, **{"tls.ciphers": strong}))))

    # Missing files.
    nocert = os.path.join(env.dir, "no-such-cert.pem")
    nokey = os.path.join(env.dir, "no-such-key.pem")
    expect_error("missing tls.cert", check_run(ini(env, "nocert.ini", {"tls.cert": nocert, "tls.key": rsa.key})),
                 rf"tls\.cert.*{E(nocert)}|{E(nocert)}.*tls\.cert", r"(?i)no such file")
    expect_error("missing tls.key", check_run(ini(env, "nokey.ini", {"tls.cert": rsa.cert, "tls.key": nokey})),
                 rf"tls\.key.*{E(nokey)}|{E(nokey)}.*tls\.key", r"(?i)no such file")

    # Unreadable files.
    locked = os.path.join(env.dir, "locked.key")
    shutil.copyfile(rsa.key, locked)
    os.chmod(locked, 0o000)
    p = ini(env, "locked.ini", {"tls.cert": rsa.cert, "tls.key": locked})
    expect_error("unreadable tls.key (as nobody)", check_run(p, as_nobody=True, env=env),
                 rf"tls\.key.*{E(locked)}", r"(?i)permission denied")
    adir = os.path.join(env.dir, "cert-is-a-directory")
    os.makedirs(adir)
    expect_error("tls.cert is a directory", check_run(ini(env, "dir.ini", {"tls.cert": adir, "tls.key": rsa.key})),
                 rf"tls\.cert.*{E(adir)}")

    # A pair that does not match.
    p = ini(env, "mismatch.ini", {"tls.cert": rsa.cert, "tls.key": ec.key})
    expect_error("mismatched RSA cert / ECDSA key", check_run(p), rf"{E(ec.key)}|{E(rsa.cert)}", r"(?i)match")
    other = ca.issue("mx-other.test", "rsa")
    p = ini(env, "mismatch2.ini", {"tls.cert": rsa.cert, "tls.key": other.key})
    expect_error("mismatched RSA cert / RSA key", check_run(p), rf"{E(other.key)}|{E(rsa.cert)}", r"(?i)match")

    # Wrong contents.
    p = ini(env, "keyascert.ini", {"tls.cert": rsa.key, "tls.key": rsa.key})
    expect_error("a key file as tls.cert", check_run(p), rf"tls\.cert.*{E(rsa.key)}")
    garbage = write(env, "garbage.key", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    expect_error("garbage tls.key", check_run(ini(env, "garbage.ini", {"tls.cert": rsa.cert, "tls.key": garbage})),
                 rf"tls\.key.*{E(garbage)}")
    enc = os.path.join(env.dir, "encrypted.key")
    harness.openssl("pkey", "-in", rsa.key, "-out", enc, "-aes256", "-passout", "pass:secret")
    os.chmod(enc, 0o644)
    expect_error("passphrase-protected tls.key", check_run(ini(env, "enc.ini", {"tls.cert": rsa.cert, "tls.key": enc})),
                 rf"tls\.key.*{E(enc)}", r"(?i)pass")

    # Weak suites and versions.
    for suite in ("TLS-RSA-WITH-3DES-EDE-CBC-SHA", "TLS-ECDHE-RSA-WITH-3DES-EDE-CBC-SHA",
                  "TLS-RSA-WITH-RC4-128-SHA", "TLS-RSA-WITH-NULL-MD5", "TLS-ECDHE-ECDSA-WITH-NULL-SHA",
                  "TLS-PSK-WITH-AES-128-GCM-SHA256"):
        ciphers = f"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256, {suite}"
        p = ini(env, f"weak-{suite}.ini", harness.tls_settings(rsa, **{"tls.ciphers": ciphers}))
        expect_error(f"weak suite {suite}", check_run(p), r"tls\.ciphers", E(suite))
    for version in ("1.0", "1.1", "ssl3"):
        p = ini(env, f"version-{version}.ini", harness.tls_settings(rsa, **{"tls.min_version": version}))
        expect_error(f"tls.min_version = {version}", check_run(p), r"tls\.min_version")

    # The backend leg's CA file.
    noca = os.path.join(env.dir, "no-such-ca.pem")
    p = ini(env, "noca.ini", {"backend.tls": "on", "backend.tls_ca": noca})
    expect_error("missing backend.tls_ca", check_run(p), rf"backend\.tls_ca.*{E(noca)}|{E(noca)}.*backend\.tls_ca")

    # tls.ciphers is what the server negotiates.
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(
        rsa, **{"tls.ciphers": "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256"}))
    r = harness.openssl_handshake(screen.port, source="127.0.0.7", ca_file=ca.ca_file, extra=["-tls1_2"])
    m = harness.check_search(r"^Ciphersuite: (\S+)", r.stderr, f"tls.ciphers = one suite: {' '.join(r.cmd)}")
    check(m.group(1) == "ECDHE-RSA-CHACHA20-POLY1305",
          f"tls.ciphers = TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256, negotiated {m.group(1)}")
    screen.wait_for_log(r"with cipher ECDHE-RSA-CHACHA20-POLY1305 \(256/256 bits\)")
    screen.stop()

    # Starting with a missing certificate fails and never listens.
    bad = env.smtpscreen(start=False, name="bad", postfix=pf, dns=dns,
                         settings={"tls.cert": nocert, "tls.key": rsa.key})
    r = harness.run_smtpscreen(["-c", bad.config_path], timeout=20)
    check(r.returncode != 0, f"smtpscreen started with a missing tls.cert (rc {r.returncode})")
    check(nocert in r.stdout + r.stderr, f"the start error must name {nocert}:\n{r.stdout}{r.stderr}")
    check(not harness.port_listening("127.0.0.1", bad.port), "something listens on the bad instance's port")


harness.run(main)
