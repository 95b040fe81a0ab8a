"""Regexes of smtpscreen's log lines (docs/design.md, "Log lines") for one client
address and port, and the check that a session ends with exactly one DISCONNECT line."""

import re
import time

from .checks import check

__all__ = ["ip_port", "re_connect", "re_pass_new", "re_pass_old", "re_disconnect",
           "re_pregreet", "re_dnsbl_rank", "re_noqueue", "re_tls_established",
           "re_disconnect_exact", "disconnect_lines", "disconnect_outcome",
           "check_one_disconnect"]


def ip_port(ip, port=None):
    """The "[ip]:port" of a log line; any port when port is None."""
    host = re.escape(ip)
    port_re = str(port) if port is not None else r"\d+"
    return rf"\[{host}\]:{port_re}"


def re_connect(ip, port=None, to=None):
    """to: (ip, port) of the listener the client connected to."""
    dest = ip_port(to[0], to[1]) if to else r"\[[0-9a-fA-F.:]+\]:\d+"
    return rf"CONNECT from {ip_port(ip, port)} to {dest}\b"


def re_pass_new(ip, port=None):
    return rf"PASS NEW {ip_port(ip, port)}"


def re_pass_old(ip, port=None):
    return rf"PASS OLD {ip_port(ip, port)}"


def re_disconnect(ip, port=None):
    return rf"DISCONNECT {ip_port(ip, port)}"


def re_pregreet(ip, port=None):
    return rf"PREGREET \d+ after [0-9.]+s? from {ip_port(ip, port)}: "


def re_dnsbl_rank(ip, rank, port=None):
    return rf"DNSBL rank {rank} for {ip_port(ip, port)}"


def re_noqueue(ip, reply_regex, port=None):
    return rf"NOQUEUE: reject: RCPT from {ip_port(ip, port)}: {reply_regex}"


def re_tls_established(ip, port=None, protocol=r"TLSv1\.2"):
    """smtpscreen's (and Postfix's) line for a finished client handshake."""
    return (rf"Anonymous TLS connection established from {ip_port(ip, port)}: {protocol} "
            rf"with cipher (\S+) \((\d+)/(\d+) bits\)")


def re_disconnect_exact(ip, port):
    """A DISCONNECT line for exactly this client port (port 123 does not match 1234)."""
    return rf"DISCONNECT {ip_port(ip, port)}(?!\d)"


def disconnect_lines(screen, ip, port):
    rx = re.compile(re_disconnect_exact(ip, port))
    return [ln for ln in screen.log_lines() if rx.search(ln)]


def disconnect_outcome(line):
    """(outcome, seconds) of a 'DISCONNECT [ip]:port OUTCOME after T' line."""
    m = re.search(r"DISCONNECT \S+ (\S+) after ([0-9.]+)", line)
    return (m.group(1), float(m.group(2))) if m else (None, None)


def check_one_disconnect(screen, ip, port, outcome=None, timeout=10, settle=0.3):
    """Waits for the session's DISCONNECT line, then checks that there is exactly one
    (docs/design.md, step 9) and, with outcome (a regex), that it names that outcome. Returns
    (outcome, seconds)."""
    screen.wait_for_log(re_disconnect_exact(ip, port), timeout=timeout)
    time.sleep(settle)
    lines = disconnect_lines(screen, ip, port)
    check(len(lines) == 1, f"expected exactly one DISCONNECT line for [{ip}]:{port}, got {len(lines)}: {lines}")
    got, secs = disconnect_outcome(lines[0])
    if outcome is not None:
        check(got is not None and re.fullmatch(outcome, got),
              f"DISCONNECT for [{ip}]:{port}: expected outcome /{outcome}/, got {lines[0]!r}")
    return got, secs
