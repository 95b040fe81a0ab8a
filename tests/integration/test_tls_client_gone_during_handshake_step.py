#!/usr/bin/env python3
"""docs/design.md, "TLS": a handshake step runs on libuv's thread pool, and a session
that ends while its step is there (the client reset the connection right behind its
ClientHello) is freed only once the step has returned. 40 clients each say STARTTLS,
send a whole ClientHello and reset the connection at once, so that the reset is read
while the server's RSA signature and ECDHE for that hello are being computed on a pool
thread; then a normal client does STARTTLS and delivers. Run under ASan (build-asan),
a stream freed under its step is a heap-use-after-free that stops smtpscreen; in any
build the last client must be served and every abandoned handshake logged as over
(DISCONNECT), with the slots of tls.max_pending_handshakes (here 40) all given back:
the second wave of 40 gets the 220 too."""
import os
import socket
import ssl
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENTS = 40


def client_hello():
    """The bytes of a real TLS 1.2 ClientHello (Python's ssl, memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    check(len(hello) > 5 and hello[0] == 0x16, f"no ClientHello from Python's ssl: {hello[:16]!r}")
    return hello


def wave(screen, hello, tag):
    clients = []
    for i in range(CLIENTS):
        c = harness.SmtpClient(screen.port, source=f"127.0.1.{i + 1}", timeout=15)
        c.read_greeting(code=220)
        c.expect("EHLO client.example.org", 250)
        r = c.cmd("STARTTLS")
        check(r.text == "220 2.0.0 Ready to start TLS", f"{tag}: client {i}: STARTTLS: {r.text!r}")
        clients.append(c)
    since = screen.log_size()
    ports = []
    for c in clients:
        ports.append(c.local_port)
        # SO_LINGER 0: close(2) sends an RST right behind the hello.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.sendall(hello)
        c.close()
    for i, port in enumerate(ports):
        screen.wait_for_log(harness.re_disconnect(f"127.0.1.{i + 1}", port), since=since, timeout=30)
    harness.log(f"{tag}: {CLIENTS} clients reset right behind their ClientHello, every session over")


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    ca = harness.make_test_ca(env)
    cert = ca.issue("mx-rsa.test", "rsa")
    access = harness.permit_loopback(env)
    screen = env.smtpscreen(postfix=pf, dns=dns, settings=harness.tls_settings(
        cert, **{"access.file": access, "tls.max_pending_handshakes": str(CLIENTS),
                 "limits.per_client_connections": "1000"}))
    hello = client_hello()
    wave(screen, hello, "first wave")
    wave(screen, hello, "second wave")

    c, _ = harness.starttls_client(screen.port, source="127.0.0.7", ca_file=ca.ca_file)
    marker = harness.unique_marker("after-resets")
    c.send_mail(marker, ehlo=False)
    c.close()
    pf.wait_for_delivery(marker)
    check(screen.proc.poll() is None, "smtpscreen is no longer running")
    screen.check_no_log(r"AddressSanitizer|runtime error")
    screen.stop()


harness.run(main)
