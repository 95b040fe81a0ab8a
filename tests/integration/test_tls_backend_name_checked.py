#!/usr/bin/env python3
"""backend.tls_name (issue 14, hole 6): with backend.tls = on and backend.tls_ca set, the
backend's certificate must verify against the CA *and* name backend.tls_name (default:
the address of backend.address; an IP address must then be an iPAddress entry of the
certificate's subjectAltName, which mbedTLS 2.28 itself never checks).

A scripted STARTTLS backend (PROXY v2, 220, EHLO offering STARTTLS, then TLS with a
certificate from the test CA) stands in for the MTA, once with a certificate for
other.test that lists no IP address, once with one that lists 127.0.0.1:
  - other.test's certificate, default tls_name (127.0.0.1): refused: the client gets 421,
    never the backend's 220, and smtpscreen logs that the certificate does not list
    127.0.0.1 and names backend.tls_name (before, the chain alone was checked and the
    client was handed off);
  - tls_name = backend.test (a name the certificate does not carry): refused the same way;
  - tls_name = other.test: handed off, 'Verified TLS connection established to ...';
  - the certificate that lists IP 127.0.0.1, default tls_name: handed off, Verified."""
import os
import ssl
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


class StarttlsBackend:
    """SMTP over loopback behind a PROXY v2 header, offering STARTTLS with `cert`; one
    thread per connection. Counts the connections that finished a TLS handshake."""

    def __init__(self, cert):
        self.ctx, self.listener = harness.tls_server_listener(cert, 16)
        self.port = self.listener.getsockname()[1]
        self.tls_sessions = 0
        self.errors = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        sock.settimeout(15)
        buf = b""
        try:
            while len(buf) < 16:
                buf += sock.recv(4096)
            (length,) = struct.unpack("!H", buf[14:16])
            while len(buf) < 16 + length:
                buf += sock.recv(4096)
            buf = buf[16 + length:]
            sock.sendall(b"220 named.test ESMTP\r\n")
            tls = False
            while True:
                while b"\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    sock.sendall(b"250-named.test inside TLS\r\n250 8BITMIME\r\n" if tls
                                 else b"250-named.test\r\n250 STARTTLS\r\n")
                elif verb == b"STARTTLS" and not tls:
                    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    try:
                        sock = self.ctx.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError):
                        return   # smtpscreen refused the certificate
                    tls, buf = True, b""
                    self.tls_sessions += 1
                elif verb == b"QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    sock.sendall(b"250 2.0.0 Ok\r\n")
        except (OSError, ssl.SSLError):
            pass
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass


def screen_for(env, backend, name, tls_name, ca):
    settings = {"backend.address": f"127.0.0.1:{backend.port}", "backend.tls": "on",
                "backend.tls_ca": ca.ca_file, "tls.passthrough": "off"}
    if tls_name is not None:
        settings["backend.tls_name"] = tls_name
    return env.smtpscreen(name=name, settings=settings)


def refused(env, backend, name, tls_name, ca, source, logged):
    screen = screen_for(env, backend, name, tls_name, ca)
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    reply = c.read_reply(timeout=12)
    check(reply.code == 421, f"{name}: a backend certificate that does not name {logged!r} must give the client "
                             f"421, got {reply.text!r}")
    check("named.test" not in reply.text, f"{name}: the backend's greeting reached the client: {reply.text!r}")
    c.check_closed(5, f"{name}: after the 421")
    m = screen.wait_for_log(rf"\[{source}\]:{port}\b.*{logged}.*backend\.tls_name")
    harness.log(f"{name}: {m.group(0)}")
    screen.wait_for_log(rf"DISCONNECT \[{source}\]:{port} backend-unavailable")
    screen.stop()


def accepted(env, backend, name, tls_name, ca, source):
    screen = screen_for(env, backend, name, tls_name, ca)
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    greeting = c.read_greeting(timeout=12, code=220)
    check("named.test" in greeting.text, f"{name}: not handed off: {greeting.text!r}")
    e = c.expect("EHLO client.example.org", 250)
    check("inside TLS" in e.text, f"{name}: the EHLO did not reach the backend inside TLS: {e.text!r}")
    c.expect("QUIT", 221)
    c.close()
    screen.wait_for_log(r"Verified TLS connection established to \[127\.0\.0\.1\]:\d+: TLSv1\.2")
    screen.stop()


def main(env):
    ca = harness.make_test_ca(env)
    no_ip = StarttlsBackend(ca.issue("other.test", "ecdsa", ips=()))
    env.add_cleanup(no_ip.stop)
    with_ip = StarttlsBackend(ca.issue("backend.test", "ecdsa", name="with-ip"))
    env.add_cleanup(with_ip.stop)

    refused(env, no_ip, "default-name", None, ca, "127.0.0.31", r"does not list IP address 127\.0\.0\.1")
    refused(env, no_ip, "wrong-name", "backend.test", ca, "127.0.0.32", r'does not name "backend\.test"')
    check(no_ip.tls_sessions <= 1, "a refused backend certificate still carried a session")
    accepted(env, no_ip, "right-name", "other.test", ca, "127.0.0.33")
    accepted(env, with_ip, "ip-in-san", None, ca, "127.0.0.34")
    check(not no_ip.errors and not with_ip.errors, f"scripted backends failed: {no_ip.errors + with_ip.errors}")


harness.run(main)
