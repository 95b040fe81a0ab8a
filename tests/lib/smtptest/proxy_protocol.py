"""PROXY protocol headers (v1 text, v2 binary) as a load balancer sends them, and the
v2 header smtpscreen sends a backend, read back."""

import socket
import struct

from .checks import Failure, check

__all__ = ["PROXY_V2_SIGNATURE", "proxy_v1_header", "proxy_v2_header", "parse_proxy_v2"]


PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1_header(src, sport, dst, dport):
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2_header(src, sport, dst, dport):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21  # AF_INET6, STREAM
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11  # AF_INET, STREAM
    payload = addrs + struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(payload)) + payload


def parse_proxy_v2(data):
    """(src, sport, dst, dport, header_length) of a PROXY v2 header at the start of data."""
    check(data.startswith(PROXY_V2_SIGNATURE), f"no PROXY v2 signature in {data[:32]!r}")
    ver_cmd, fam = data[12], data[13]
    (length,) = struct.unpack("!H", data[14:16])
    check(ver_cmd == 0x21, f"PROXY v2 version/command byte {ver_cmd:#x}, expected 0x21")
    body = data[16:16 + length]
    if fam == 0x11:
        src, dst = socket.inet_ntoa(body[0:4]), socket.inet_ntoa(body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
    elif fam == 0x21:
        src = socket.inet_ntop(socket.AF_INET6, body[0:16])
        dst = socket.inet_ntop(socket.AF_INET6, body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
    else:
        raise Failure(f"PROXY v2 family byte {fam:#x} not TCP4/TCP6")
    return src, sport, dst, dport, 16 + length
