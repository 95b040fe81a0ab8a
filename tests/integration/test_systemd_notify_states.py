#!/usr/bin/env python3
"""Under systemd (Type=notify) smtpscreen tells its state through $NOTIFY_SOCKET, as
libsystemd's sd_notify does: READY=1 once every listener is open, RELOADING=1 then
READY=1 around a SIGHUP (also one that is refused), STOPPING=1 at SIGTERM, in that order.
The test plays systemd: it binds the unix datagram socket and reads what arrives.
  - Two listen addresses; when READY=1 arrives both accept a connection at once.
  - SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
  - A broken file and SIGHUP: RELOADING=1, then READY=1 again (the old settings run).
  - SIGTERM: STOPPING=1, and the process exits 0."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


class NotifySocket:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.seen = []

    def next(self, timeout=10):
        """The next message as a dict of its KEY=VALUE lines."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise harness.Failure(f"no sd_notify message within {timeout}s; so far: {self.seen}") from None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.seen.append(fields)
        harness.log(f"notify: {fields}")
        return fields

    def expect(self, key, timeout=10):
        msg = self.next(timeout)
        check(msg.get(key) == "1", f"expected {key}=1 next, got {msg}; all so far: {self.seen}")
        return msg


def main(env):
    notify = NotifySocket(os.path.join(env.dir, "notify.sock"))
    second = harness.free_port()
    screen = env.smtpscreen(start=False)
    screen.settings["listen.address"] = f"127.0.0.1:{screen.port}, 127.0.0.1:{second}"
    screen.write_config()
    screen.start(wait=False, extra_env={"NOTIFY_SOCKET": notify.path})

    msg = notify.expect("READY")
    for port in (screen.port, second):
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # accepted: the listener was open when READY=1 was sent
    check("STATUS" in msg and str(screen.port) in msg["STATUS"],
          f"READY=1 should come with a STATUS naming the listeners, got {msg}")

    screen.signal(signal.SIGHUP)
    msg = notify.expect("RELOADING")
    check(msg.get("MONOTONIC_USEC", "").isdigit(), f"RELOADING=1 without MONOTONIC_USEC: {msg}")
    notify.expect("READY")
    screen.wait_for_log(r"SIGHUP: reloaded ")

    with open(screen.config_path, "a") as f:
        f.write("\n[greet]\nwait = soon\n")
    screen.signal(signal.SIGHUP)
    notify.expect("RELOADING")
    notify.expect("READY")
    screen.wait_for_log(r"SIGHUP: .*keeping the settings in use")

    screen.signal(signal.SIGTERM)
    notify.expect("STOPPING")
    screen.stop()
    time.sleep(0.2)
    notify.sock.setblocking(False)
    try:
        extra = notify.sock.recv(4096)
        harness.fail(f"a message after STOPPING=1: {extra!r}")
    except BlockingIOError:
        pass


harness.run(main)
