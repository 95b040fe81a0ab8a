"""The metrics endpoint (stats.listen): a raw HTTP request, and a scrape read into
numbers, checked against Prometheus's text format on the way."""

import re
import socket

from .checks import check

__all__ = ["http_request", "scrape_metrics"]


def http_request(port, data, host="127.0.0.1", timeout=10):
    """Sends data (bytes) to host:port, reads until the server closes, and returns
    (status, headers {lower-case name: value}, body bytes); status is None when the
    server closed or reset the connection without an answer."""
    s = socket.create_connection((host, port), timeout=timeout)
    got = b""
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading everything
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0]) if lines and lines[0] else None
    if not m:
        return None, {}, got
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(m.group(1)), headers, body


def scrape_metrics(port, host="127.0.0.1", timeout=10):
    """GET /metrics: {"name{labels}": float} of every sample; fails unless the answer is
    a 200 in Prometheus's text format whose every line is a sample, HELP or TYPE."""
    status, headers, body = http_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", host, timeout)
    check(status == 200, f"GET /metrics on {host}:{port}: {status} {body[:200]!r}")
    check(headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
          f"GET /metrics: Content-Type {headers.get('content-type')!r}")
    check(int(headers.get("content-length", -1)) == len(body), "GET /metrics: Content-Length is not the body's")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$", line)
        check(m is not None, f"GET /metrics: not a sample line: {line!r}")
        out[m.group(1)] = float(m.group(2))
    return out
