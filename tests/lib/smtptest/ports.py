"""Loopback ports: free ones for a listener, whether something listens (from /proc/net,
so the listener sees no connection), whether a connect is refused."""

import socket

from .checks import Failure

__all__ = ["free_port", "have_ipv6_loopback", "free_udp_tcp_port", "port_listening",
           "connect_refused", "dead_udp_port"]


def free_port(host="127.0.0.1"):
    """An ephemeral TCP port that is free right now on host (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n, host="127.0.0.1"):
    """n distinct ephemeral TCP ports, free right now on host. Bound all at once: n calls
    of free_port() can get the same port back, as the kernel may hand out again a port
    just released (Postfix then serves two services on one port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def have_ipv6_loopback():
    """True when ::1 can be bound (some containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP (for a DNS server)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise Failure("no free UDP+TCP port found")


def _proc_net_listening(port):
    """True when some socket is in LISTEN state on port (reads /proc/net/tcp{,6}).
    The kernel lists every listening socket before the first connection, so the scan
    stops at the first line in another state: under a flood the tables hold 100,000
    TIME_WAIT lines, and reading them all made a 15 s start-up wait time out."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                found_table = True
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) < 4:
                        continue
                    local, state = fields[1], fields[3]
                    if state != "0A":
                        break
                    if int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return None if not found_table else False


def port_listening(host, port):
    listening = _proc_net_listening(port)
    if listening is not None:
        return listening
    try:  # no /proc/net: fall back to a connect (leaves a line in the server's log)
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def connect_refused(port, host="127.0.0.1", timeout=2):
    """True when a TCP connection to host:port is refused (nothing listening)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def dead_udp_port():
    """A UDP (and TCP) port on 127.0.0.1 where nothing listens: a DNS server that is down."""
    return free_udp_tcp_port()
