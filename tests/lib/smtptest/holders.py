"""Many idle clients held open at once, for the memory tests: thousands of connections
from chosen loopback addresses, 500 opened at a time and each kept once the server's
first line has come (selectors' epoll, so descriptors above 1024 are fine)."""

import selectors
import socket
import time

from .checks import check, fail

__all__ = ["hold_clients"]


def hold_clients(port, count, source, want=b"220-", batch=500, timeout=30, on_held=None, after_batch=None):
    """Opens count connections to 127.0.0.1:port, the i-th bound to address source(i).
    A connection is held once a complete line it received starts with want; then
    on_held(sock) is called (a bot that talks first, say). Each batch must be held
    within timeout seconds; after_batch(held_so_far) runs after each. Returns the held
    sockets, which the caller closes."""
    socks = []
    for start in range(0, count, batch):
        pending = {}
        sel = selectors.DefaultSelector()
        for i in range(start, min(count, start + batch)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((source(i), 0))
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                s = key.fileobj
                try:
                    data = s.recv(200)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(f"holder {len(socks) + 1}: {e!r}")
                check(data, f"holder {len(socks) + 1}: closed after {pending[s]!r}")
                pending[s] += data
                if any(line.startswith(want) for line in pending[s].split(b"\r\n")[:-1]):
                    if on_held:
                        on_held(s)
                    socks.append(s)
                    sel.unregister(s)
                    del pending[s]
        sel.close()
        check(not pending, f"{len(pending)} holders of a batch got no {want!r} line within {timeout}s "
                           f"({len(socks)} so far)")
        if after_batch:
            after_batch(socks)
    return socks
