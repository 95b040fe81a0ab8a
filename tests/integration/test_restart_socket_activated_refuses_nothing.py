#!/usr/bin/env python3
"""A restart under socket activation refuses no connection: the listening socket belongs
to systemd (here: the test, which holds it and passes it with LISTEN_FDS/LISTEN_PID as
systemd does), so while one smtpscreen stops and the next starts, new clients wait in
the kernel's backlog instead of being refused or reset.
  - A load of clean clients (each a full session: greeting, EHLO, MAIL, RCPT, DATA, QUIT
    through smtpscreen to a sink backend) runs while smtpscreen is restarted 3 times
    (SIGTERM, wait for the exit, start again with the same socket). Every session
    completes: zero refused, reset or failed; every message reaches the sink.
  - For comparison (logged, and in the README): the same load and restarts with
    smtpscreen binding listen.address itself, counting refused and reset connections."""
import os
import signal
import smtplib
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENTS = 8
RESTARTS = 3


class Load:
    """CLIENTS threads doing clean sessions back to back until stopped."""

    def __init__(self, port):
        self.port = port
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "refused": 0, "reset": 0, "timeout": 0, "other": 0}
        self.examples = []
        self.markers = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def count(self, kind, detail=None):
        with self.lock:
            self.counts[kind] += 1
            if detail and len(self.examples) < 5:
                self.examples.append(detail)

    def client(self, n):
        i = 0
        while not self.stopping.is_set():
            i += 1
            marker = f"{harness.unique_marker('restart')}-{n}-{i}"
            msg = (f"From: <sender@example.org>\r\nTo: <user@example.test>\r\nSubject: {marker}\r\n"
                   f"X-Soak-Marker: {marker}\r\n\r\nrestart test\r\n")
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=40,
                                  source_address=(harness.CLEAN_CLIENT, 0)) as s:
                    s.ehlo("client.example.org")
                    s.sendmail("sender@example.org", ["user@example.test"], msg)
                with self.lock:
                    self.markers.append(marker)
                self.count("ok")
            except ConnectionRefusedError as e:
                self.count("refused", repr(e))
                time.sleep(0.05)
            except (ConnectionResetError, BrokenPipeError, smtplib.SMTPServerDisconnected) as e:
                self.count("reset", repr(e))
            except (socket.timeout, TimeoutError) as e:
                self.count("timeout", repr(e))
            except Exception as e:  # an SMTP error reply, ...
                self.count("other", repr(e))


def restart_under_load(screen, start, port):
    load = Load(port).start()
    time.sleep(1.5)
    for r in range(RESTARTS):
        since = screen.log_size()
        screen.signal(signal.SIGTERM)
        screen.stop()
        start()
        screen.wait_for_log(r"started: ", since=since, timeout=15)
        time.sleep(1.5)
    load.stop()
    harness.log(f"{screen.name}: {load.counts}; examples {load.examples}")
    return load


def main(env):
    sink = harness.SinkProcess(env).start()
    common = {"backend.address": f"127.0.0.1:{sink.port}", "greet.wait": "300ms",
              "limits.shutdown_grace": "10s", "log.stderr": "on"}

    # systemd's part: the socket, bound and listening before any smtpscreen runs.
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    held.listen(4096)
    port = held.getsockname()[1]
    # Two event loops: each accepts from the inherited socket through its own descriptor.
    activated = env.smtpscreen(start=False, name="activated",
                               settings=dict(common, **{"listen.address": f"127.0.0.1:{port}",
                                                        "process.threads": "2"}))

    def start_activated():
        activated.start(wait=False, listen_sockets=[held])

    start_activated()
    activated.wait_for_log(r"started: .*listening on 127\.0\.0\.1:\d+ \(socket activation\)")
    load = restart_under_load(activated, start_activated, port)
    activated.stop()
    held.close()
    check(load.counts["ok"] > 50, f"too few sessions to show anything: {load.counts}")
    bad = {k: v for k, v in load.counts.items() if k != "ok" and v}
    check(not bad, f"socket-activated restarts: {bad} of {sum(load.counts.values())} sessions failed "
                   f"(expected none); examples: {load.examples}")
    harness.wait_until(lambda: len(sink.records()) >= len(load.markers), 15,
                       what=f"{len(load.markers)} messages at the sink")
    delivered = {m for m, _ in sink.records()}
    missing = [m for m in load.markers if m not in delivered]
    check(not missing, f"{len(missing)} accepted messages never reached the sink, e.g. {missing[:3]}")
    activated_counts = load.counts

    # For comparison: smtpscreen binds the port itself; each restart closes it.
    plain = env.smtpscreen(start=False, name="plain",
                           settings=dict(common, **{"listen.address": f"127.0.0.1:{port}"}))
    plain.start()
    load = restart_under_load(plain, lambda: plain.start(), port)
    plain.stop()
    total = sum(load.counts.values())
    lost = total - load.counts["ok"]
    print(f"RESULT socket activation: {activated_counts['ok']} sessions, 0 refused/reset over {RESTARTS} restarts; "
          f"without: {lost} of {total} sessions refused or reset ({load.counts})")


harness.run(main, timeout=170)
