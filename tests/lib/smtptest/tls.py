"""TLS for the tests: a private CA made with the openssl command, STARTTLS clients
(Python's ssl, openssl s_client driven line by line) and posttls-finger."""

import os
import re
import shutil
import subprocess
import threading
import time

from .checks import Failure, check, tail, wait_until
from .processes import read_text, which
from .smtp_client import SmtpClient, ehlo_offers, message_text

__all__ = ["tls12_session", "ticket_key_file", "ServerCert", "openssl", "openssl_newkey_args", "TestCA", "make_test_ca",
           "tls_settings", "permit_loopback", "python_tls_context", "tls_server_listener", "tls_wrap", "peer_cn", "starttls_client",
           "OpensslClient", "openssl_client", "openssl_handshake", "posttls_finger"]


class ServerCert:
    """A certificate issued by TestCA: cert (PEM, leaf first, then any intermediate),
    key (PEM), cn (subject CN), kind ("rsa" or "ecdsa")."""

    def __init__(self, cert, key, cn, kind):
        self.cert, self.key, self.cn, self.kind = cert, key, cn, kind

    def __repr__(self):
        return f"ServerCert({self.cn!r}, {self.kind}, {self.cert})"


def openssl(*args, cwd=None):
    r = subprocess.run([which("openssl")] + list(args), capture_output=True, text=True,
                       timeout=60, cwd=cwd, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise Failure(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def openssl_newkey_args(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    if kind == "ecdsa":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    raise Failure(f"unknown key kind {kind!r} (rsa or ecdsa)")


class TestCA:
    """A private CA in directory (created), made with the openssl command: an RSA root
    ("<name> root", ca_file is what clients trust) and, on demand, an intermediate.
    issue() makes server certificates (RSA or ECDSA keys) valid for a few days, with
    serverAuth, the CN and subjectAltNames; chain=True signs with the intermediate and
    writes the cert file as a chain (leaf, intermediate), as a real server has it."""

    def __init__(self, directory, name="smtpscreen test CA"):
        self.dir = directory
        self.name = name
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        self.ca_key = os.path.join(directory, "ca.key")
        self.ca_file = os.path.join(directory, "ca.pem")
        openssl("req", "-x509", *openssl_newkey_args("rsa"), "-nodes", "-sha256",
                 "-keyout", self.ca_key, "-out", self.ca_file, "-days", "30",
                 "-subj", f"/O=smtpscreen tests/CN={name} root",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._intermediate = None
        self._serial = int(time.time() * 1000) % 10**9

    def _sign(self, csr, out, issuer_cert, issuer_key, extensions):
        ext = out + ".ext"
        with open(ext, "w") as f:
            f.write(extensions)
        self._serial += 1
        openssl("x509", "-req", "-in", csr, "-CA", issuer_cert, "-CAkey", issuer_key,
                 "-set_serial", str(self._serial), "-out", out, "-days", "7", "-sha256",
                 "-extfile", ext)

    def intermediate(self):
        """(cert, key) of an intermediate CA under the root, made once."""
        if self._intermediate is None:
            key = os.path.join(self.dir, "intermediate.key")
            csr = os.path.join(self.dir, "intermediate.csr")
            cert = os.path.join(self.dir, "intermediate.pem")
            openssl("req", "-new", *openssl_newkey_args("ecdsa"), "-nodes", "-keyout", key,
                     "-out", csr, "-subj", f"/O=smtpscreen tests/CN={self.name} intermediate")
            self._sign(csr, cert, self.ca_file, self.ca_key,
                       "basicConstraints=critical,CA:TRUE,pathlen:0\n"
                       "keyUsage=critical,keyCertSign,cRLSign\n")
            self._intermediate = (cert, key)
        return self._intermediate

    def issue(self, cn, kind="rsa", chain=False, sans=None, name=None, ips=("127.0.0.1",)):
        """A server certificate for cn: ServerCert with cert/key paths in the CA dir.
        sans: extra DNS names (cn and localhost are always in); ips: the IP addresses
        in its subjectAltName (127.0.0.1 unless told otherwise)."""
        name = name or f"{cn}-{kind}{'-chain' if chain else ''}"
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        leaf = os.path.join(self.dir, f"{name}.leaf.pem")
        cert = os.path.join(self.dir, f"{name}.pem")
        openssl("req", "-new", *openssl_newkey_args(kind), "-nodes", "-keyout", key,
                 "-out", csr, "-subj", f"/O=smtpscreen tests/CN={cn}")
        names = [cn, "localhost"] + list(sans or [])
        alt = ",".join([f"DNS:{n}" for n in dict.fromkeys(names)] + [f"IP:{ip}" for ip in ips])
        exts = ("basicConstraints=critical,CA:FALSE\n"
                f"keyUsage=critical,digitalSignature{',keyEncipherment' if kind == 'rsa' else ''}\n"
                "extendedKeyUsage=serverAuth\n"
                f"subjectAltName={alt}\n")
        if chain:
            icert, ikey = self.intermediate()
            self._sign(csr, leaf, icert, ikey, exts)
            with open(cert, "w") as f:
                f.write(read_text(leaf) + read_text(icert))
        else:
            self._sign(csr, leaf, self.ca_file, self.ca_key, exts)
            shutil.copyfile(leaf, cert)
        for p in (cert, key):
            os.chmod(p, 0o644)   # Postfix's smtpd (root at start) and smtpscreen read them
        return ServerCert(cert, key, cn, kind)


def make_test_ca(env, name="smtpscreen test CA", subdir="ca"):
    """A TestCA in the test's temporary directory."""
    return TestCA(os.path.join(env.dir, subdir), name)


def tls_settings(cert, **extra):
    """smtpscreen settings for STARTTLS towards clients with a ServerCert."""
    s = {"tls.cert": cert.cert, "tls.key": cert.key}
    s.update(extra)
    return s


def permit_loopback(env):
    """An access.file that permits every loopback client: known at once, so the relay
    (the backend's own EHLO) answers STARTTLS, with no greet wait before it."""
    path = os.path.join(env.dir, "access.cidr")
    with open(path, "w") as f:
        f.write("127.0.0.0/8 permit\n")
    return path


def python_tls_context(ca_file=None, minimum=None, maximum=None):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.check_hostname = True
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def tls_server_listener(cert, backlog=16):
    """For a scripted STARTTLS backend: (a server SSLContext with cert's chain, a socket
    listening on 127.0.0.1 at an ephemeral port)."""
    import socket
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return ctx, listener


def tls_wrap(client, ca_file=None, server_hostname="localhost", context=None, timeout=10):
    """After the server's 220 to STARTTLS: the TLS handshake over client.sock (Python
    ssl); client then speaks SMTP inside TLS. Nothing may be buffered unread (bytes the
    server sent in clear after its 220 would be an injection). Returns the SSLSocket."""
    check(client.buf == b"", f"the server sent bytes after its 220 to STARTTLS, before the "
                             f"handshake: {client.buf!r}")
    ctx = context or python_tls_context(ca_file)
    client.sock.settimeout(timeout)
    client.sock = ctx.wrap_socket(client.sock, server_hostname=server_hostname)
    client.transcript.append(("C", f"<TLS handshake done: {client.sock.version()} "
                                   f"{client.sock.cipher()[0]}>".encode()))
    return client.sock


def peer_cn(sslsock):
    cert = sslsock.getpeercert()
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def starttls_client(port, source=None, ca_file=None, server_hostname="localhost",
                    helo="client.example.org", timeout=15):
    """A client through smtpscreen's STARTTLS: connect (from source), read the whole
    greeting, EHLO (its reply must offer STARTTLS), STARTTLS (220), handshake (Python
    ssl), EHLO again (must not offer STARTTLS any more). Returns (SmtpClient, ehlo
    reply inside TLS)."""
    c = SmtpClient(port, source=source, timeout=timeout)
    c.read_greeting(timeout, code=220)
    ehlo = c.expect(f"EHLO {helo}", 250)
    check(ehlo_offers(ehlo, "STARTTLS"), f"EHLO reply does not offer STARTTLS: {ehlo.text!r}")
    c.expect("STARTTLS", 220)
    tls_wrap(c, ca_file, server_hostname)
    ehlo2 = c.expect(f"EHLO {helo}", 250)
    check(not ehlo_offers(ehlo2, "STARTTLS"),
          f"the EHLO reply inside TLS offers STARTTLS again: {ehlo2.text!r}")
    return c, ehlo2


class OpensslClient:
    """`openssl s_client -starttls smtp -crlf -brief -nocommands` driven line by line
    (-nocommands: a line starting with R or Q is SMTP, not "renegotiate" or "quit"):
    send() writes a line, expect() waits for a reply code sent inside TLS. The
    brief connection summary (protocol, cipher, peer certificate) is on stderr; the
    process ends when the server closes."""

    def __init__(self, port, host="127.0.0.1", source=None, ca_file=None,
                 helo="client.example.org", extra=(), timeout=20):
        cmd = [which("openssl"), "s_client", "-connect", f"{host}:{port}", "-starttls", "smtp",
               "-name", helo, "-crlf", "-brief", "-nocommands"]
        if source:
            cmd += ["-bind", f"{source}:0"]
        if ca_file:
            cmd += ["-CAfile", ca_file, "-verify_return_error", "-verify_hostname", "localhost"]
        cmd += list(extra)
        self.cmd = cmd
        self.timeout = timeout
        self.out = b""
        self.err = b""
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, "out"), daemon=True),
                        threading.Thread(target=self._pump, args=(self.proc.stderr, "err"), daemon=True)]
        for t in self.readers:
            t.start()
        self.pos = 0

    def _pump(self, stream, attr):
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(1)
            if not chunk:
                return
            with self.lock:
                setattr(self, attr, getattr(self, attr) + chunk)

    def stdout_text(self):
        with self.lock:
            return self.out.decode("utf-8", "replace")

    def stderr_text(self):
        with self.lock:
            return self.err.decode("utf-8", "replace")

    def wait_established(self, timeout=None):
        """The brief summary: {'protocol', 'cipher', 'peer'} once 'CONNECTION ESTABLISHED'."""
        t = timeout or self.timeout
        try:
            wait_until(lambda: "Ciphersuite:" in self.stderr_text() or self.proc.poll() is not None,
                       t, what="openssl s_client handshake")
        except Failure:
            raise Failure(f"openssl s_client: no handshake within {t}s; {self.describe()}") from None
        time.sleep(0.1)
        err = self.stderr_text()
        check("CONNECTION ESTABLISHED" in err,
              f"openssl s_client did not establish TLS; {self.describe()}")
        info = {}
        for key, name in (("protocol", "Protocol version"), ("cipher", "Ciphersuite"),
                          ("peer", "Peer certificate"), ("verification", "Verification")):
            m = re.search(rf"^{name}: (.*)$", err, re.M)
            info[key] = m.group(1).strip() if m else None
        return info

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, line, code, timeout=None):
        """Sends line (unless None) and waits for a whole reply with code; returns its text."""
        if line is not None:
            self.send(line)
        t = timeout or self.timeout

        def reply():
            text = self.stdout_text()[self.pos:]
            m = re.search(r"^(\d{3}) [^\n]*\n", text, re.M)
            if m:
                return text[:m.end()], m
            if self.proc.poll() is not None:
                raise Failure(f"openssl s_client exited ({self.proc.returncode}) waiting for {code} "
                              f"to {line!r}; {self.describe()}")
            return None
        try:
            text, m = wait_until(reply, t, what=f"reply to {line!r}")
        except Failure as e:
            if "timed out" in str(e):
                raise Failure(f"openssl s_client: no reply to {line!r} within {t}s; {self.describe()}") from None
            raise
        self.pos += len(text)
        check(int(m.group(1)) == code, f"openssl s_client: {line!r}: expected {code}, got {text!r}")
        return text

    def send_mail(self, marker, mail_from="sender@example.org", rcpt="user@example.test",
                  helo="client.example.org"):
        """EHLO (inside TLS), MAIL, RCPT, DATA, the message, QUIT; checks every reply."""
        ehlo = self.expect(f"EHLO {helo}", 250)
        check(not re.search(r"^250[- ]STARTTLS", ehlo, re.M | re.I),
              f"EHLO inside TLS offers STARTTLS again: {ehlo!r}")
        self.expect(f"MAIL FROM:<{mail_from}>", 250)
        self.expect(f"RCPT TO:<{rcpt}>", 250)
        self.expect("DATA", 354)
        for ln in message_text(marker, mail_from, rcpt).split("\r\n"):
            self.send(ln)
        # message_text ends with CRLF: the split gave a last empty line already sent
        self.expect(".", 250)
        self.expect("QUIT", 221)
        return ehlo

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def describe(self):
        return (f"command: {' '.join(self.cmd)}\n  exit: {self.proc.poll()}\n  stderr:\n"
                f"{tail(self.stderr_text(), 20)}\n  stdout:\n{tail(self.stdout_text(), 20)}")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(5)


def openssl_client(env, port, **kw):
    """An OpensslClient that the test's cleanup kills if it is still running."""
    c = OpensslClient(port, **kw)
    env.add_cleanup(c.close)
    return c


def openssl_handshake(port, source=None, ca_file=None, extra=(), timeout=20, helo="client.example.org"):
    """One `openssl s_client -starttls smtp -brief` handshake then QUIT inside TLS (stdin
    gives QUIT, then EOF; -ign_eof: it reads until the server closes); returns the
    CompletedProcess (stderr has the summary or the error, stdout the 221)."""
    cmd = [which("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp",
           "-name", helo, "-crlf", "-brief", "-nocommands", "-ign_eof"]
    if source:
        cmd += ["-bind", f"{source}:0"]
    if ca_file:
        cmd += ["-CAfile", ca_file, "-verify_return_error"]
    cmd += list(extra)
    r = subprocess.run(cmd, input="QUIT\n", capture_output=True, text=True, timeout=timeout)
    r.cmd = cmd
    return r


def tls12_session(port, source="127.0.0.7", extra=()):
    """One STARTTLS handshake in TLS 1.2 with openssl s_client (extra: -sess_out FILE to
    keep the session and its ticket, -sess_in FILE to offer them); returns "New" or
    "Reused", what openssl says of it."""
    cmd = [which("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-bind", f"{source}:0", "-starttls",
           "smtp", "-tls1_2", "-name", "client.example.org", *extra]
    r = subprocess.run(cmd, input=b"", capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^(New|Reused), TLSv1\.2, Cipher is (\S+)", out, re.M)
    check(m is not None, f"openssl s_client: no handshake: {' '.join(cmd)}\n{out}\n{r.stderr.decode()}")
    return m.group(1)


def ticket_key_file(env, name, size=80):
    """A tls.ticket_key_file of size random bytes (80 is the right size) in env's directory."""
    path = os.path.join(env.dir, name)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    os.chmod(path, 0o644)
    return path


def posttls_finger(port, postfix, ca_file=None, level="secure", match=None, extra=(), timeout=60):
    """Postfix's posttls-finger against 127.0.0.1:port (TLS security level, CA file,
    match names), reading main.cf of the private Postfix (there is no /etc/postfix);
    returns the CompletedProcess (its report is on stdout/stderr)."""
    exe = which("posttls-finger")
    cmd = [exe, "-c", "-l", level, "-L", "routine,certmatch,summary,cache"]
    if ca_file:
        cmd += ["-F", ca_file]
    cmd += list(extra) + [f"[127.0.0.1]:{port}"]
    if match:
        cmd += list(match) if isinstance(match, (list, tuple)) else [match]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, MAIL_CONFIG=postfix.config_dir))
    r.cmd = cmd
    return r
