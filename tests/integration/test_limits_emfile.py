#!/usr/bin/env python3
"""Running out of file descriptors (issue 6): smtpscreen with RLIMIT_NOFILE = 64 (set on
the running process with prlimit(2)) and more clients than that trying to connect for a
few seconds:
  - clients beyond what the limit leaves room for get 421 4.7.0 (or a close);
  - the accept failure is logged, at most once a second (counted over the saturated
    window), and smtpscreen does not crash;
  - the event loop does not spin: its CPU time (/proc/PID/stat utime+stime) grows by
    well under the wall time while saturated;
  - the sessions it did accept still work (a holder passes and its message goes through);
  - once connections close, new clients are accepted again and served end to end."""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

LIMIT = 64
SATURATE_SECONDS = 4.0


def main(env):
    backend = harness.scripted_backend(env, "smtp")
    screen = env.smtpscreen(settings={
        "backend.address": f"127.0.0.1:{backend.port}", "greet.wait": "30s",
        "cache.backend": "memory", "cache.path": None, "limits.shutdown_grace": "2s"})
    pid = screen.pid
    base_fds = harness.open_fd_count(pid)
    harness.set_open_files_limit(pid, LIMIT)
    harness.log(f"smtpscreen pid {pid}: {base_fds} descriptors open, RLIMIT_NOFILE now {LIMIT}")

    # Fill every descriptor with clients in the greet wait (30s), then keep knocking.
    holders = []
    refused = {"closed": 0, "refused": 0, "timeout": 0}
    for i in range(LIMIT + 20):
        try:
            c = harness.SmtpClient(screen.port, source=f"127.0.7.{i + 1}", timeout=2)
            first = c.read_line(timeout=2)
            check(first.startswith("220-"), f"holder {i}: expected '220-', got {first!r}")
            holders.append(c)
        except harness.Failure:
            refused["closed"] += 1
            break
        except OSError:
            refused["refused"] += 1
            break
    check(len(holders) < LIMIT, f"{len(holders)} sessions accepted with RLIMIT_NOFILE {LIMIT}?")
    harness.log(f"{len(holders)} holders accepted before the descriptors ran out")

    log_before = screen.log_size()
    cpu_before = harness.cpu_seconds(pid)
    t0 = time.monotonic()
    attempts = 0
    while time.monotonic() - t0 < SATURATE_SECONDS:
        attempts += 1
        try:
            s = socket.create_connection(("127.0.0.1", screen.port), timeout=1,
                                         source_address=(f"127.0.8.{attempts % 250 + 1}", 0))
            s.settimeout(1)
            try:
                data = s.recv(100)
            except socket.timeout:
                data = None
                refused["timeout"] += 1
            except ConnectionResetError:
                data = b""
            if data == b"":
                refused["closed"] += 1
            elif data.startswith(b"421 4.7.0"):
                # smtpscreen keeps its sessions below the open files limit itself and
                # turns the rest away with a 421 (libuv would close them silently).
                refused["421"] = refused.get("421", 0) + 1
            elif data:
                fail_text = data.decode(errors="replace")
                harness.fail(f"a client got {fail_text!r} while every descriptor was in use")
            s.close()
        except OSError:
            refused["refused"] += 1
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    cpu_used = harness.cpu_seconds(pid) - cpu_before
    window = screen.log_text()[log_before:]
    failures = re.findall(r"accept failed: (.*)", window)
    harness.log(f"saturated {elapsed:.1f}s: {attempts} connection attempts ({refused}); "
                f"{len(failures)} 'accept failed' lines; smtpscreen CPU {cpu_used:.2f}s")
    check(screen.running(), "smtpscreen died when the descriptors ran out")
    check(len(failures) <= elapsed + 1.5,
          f"{len(failures)} 'accept failed' lines in {elapsed:.1f}s: more than one a second")
    check(cpu_used < 0.35 * elapsed,
          f"smtpscreen used {cpu_used:.2f}s of CPU in {elapsed:.1f}s while saturated: the loop spins")

    # Most holders leave: a fresh client is accepted again.
    for c in holders[:-2]:
        c.close()
    harness.wait_until(lambda: harness.open_fd_count(pid) < LIMIT - 20, 10,
                       what="smtpscreen closing the holders' descriptors")
    time.sleep(0.5)
    c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=5)
    first = c.read_line(timeout=3)
    check(first.startswith("220-"), f"after the holders left, a new client must be accepted; got {first!r}")
    port = c.local_port
    c.close()
    harness.check_one_disconnect(screen, "127.0.0.7", port, outcome="hangup")
    for c in holders[-2:]:
        c.close()
    # A full session, with a greet wait short enough: reload (SIGHUP) to greet.wait 1s.
    screen.settings["greet.wait"] = "1s"
    screen.write_config()
    offset = screen.log_size()
    screen.signal(__import__("signal").SIGHUP)
    screen.wait_for_log(r"SIGHUP: reloaded", since=offset)
    c = harness.SmtpClient(screen.port, source="127.0.0.9", timeout=10)
    reply, _, _ = harness.read_full_greeting(c, timeout=8)
    check(reply.code == 220 and "scripted.test" in reply.final, f"expected the backend's 220, got {reply.text!r}")
    c.send_mail(harness.unique_marker("emfile"))
    c.check_closed(5, "after QUIT")
    check(len(backend.messages()) == 1, f"the backend got {len(backend.messages())} messages, expected 1")
    check(harness.open_fd_count(pid) < LIMIT, "descriptor count did not come back under the limit")
    # Last, so that the checks above run in any case: the operator must be told.
    all_failures = re.findall(r"accept failed: (.*)", screen.log_text())
    check(len(all_failures) >= 1,
          f"no 'accept failed' line in the log although {sum(refused.values())} "
          f"clients were turned away for lack of descriptors (RLIMIT_NOFILE {LIMIT})")
    check(re.search(r"too many open files|EMFILE|file descriptors", all_failures[0], re.I),
          f"the accept failure does not say what ran out: {all_failures[0]!r}")
    screen.stop()


harness.run(main)
