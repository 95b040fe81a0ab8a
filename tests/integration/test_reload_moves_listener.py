#!/usr/bin/env python3
"""SIGHUP with a changed listen.address opens the new address and closes the old one
(within 10 s; smtpscreen does it at once), while a session established on the old one
finishes; a file with errors is refused with exactly one log line naming FILE:LINE.
  - Two event-loop threads, listening on 127.0.0.1:A. A client is in session on A
    (greeting and EHLO done, handed to the sink backend).
  - listen.address becomes 127.0.0.1:B; SIGHUP. B accepts and A refuses connections,
    both within 10 s; the client on A then sends its message, which reaches the backend.
  - An INI with a bad value on a known line and SIGHUP: the log gains exactly one line,
    which names FILE:LINE; B keeps working with the old settings."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def main(env):
    sink = harness.SinkProcess(env).start()
    screen = env.smtpscreen(settings={"backend.address": f"127.0.0.1:{sink.port}", "greet.wait": "300ms",
                                      "process.threads": "2", "cache.backend": "memory", "cache.path": None})
    old_port = screen.port

    held = harness.SmtpClient(old_port, source=harness.CLEAN_CLIENT)
    greeting = held.read_reply(timeout=10)
    check(greeting.code == 220 and "sink.test" in greeting.text, f"greeting from the sink expected: {greeting}")
    held.ehlo()

    new_port = harness.free_port()
    screen.settings["listen.address"] = f"127.0.0.1:{new_port}"
    screen.write_config()
    since = screen.log_size()
    t0 = time.monotonic()
    screen.signal(signal.SIGHUP)
    screen.wait_for_log(r"SIGHUP: reloaded ", since=since)
    harness.wait_until(lambda: harness.port_listening("127.0.0.1", new_port), 10,
                       what=f"smtpscreen listening on the new address 127.0.0.1:{new_port}")
    harness.wait_until(lambda: harness.connect_refused(old_port), 10,
                       what=f"the old address 127.0.0.1:{old_port} closed")
    harness.log(f"listener moved {old_port} -> {new_port} in {time.monotonic() - t0:.2f}s")
    screen.port = new_port

    fresh = harness.SmtpClient(new_port, source="127.0.0.8")
    check(fresh.read_reply(timeout=10).code == 220, "no greeting on the new address")
    marker_new = harness.unique_marker("new-address")
    fresh.send_mail(marker_new, body_lines=[f"X-Soak-Marker: {marker_new}"])
    fresh.close()

    marker_old = harness.unique_marker("old-address")
    held.send_mail(marker_old, ehlo=False, body_lines=[f"X-Soak-Marker: {marker_old}"])
    held.close()
    harness.wait_until(lambda: {marker_old, marker_new} <= {m for m, _ in sink.records()}, 10,
                       what="both messages at the sink")

    # Both sessions have ended (a half-closed session may end after its message is
    # queued), so that the reload's line is the only one to come.
    for source in ("127.0.0.7", "127.0.0.8"):
        screen.wait_for_log(harness.re_disconnect(source))

    # A broken file: one line, naming the file and the line.
    text = screen.config_text().rstrip("\n").split("\n")
    text += ["", "[limits]", "max_connections = plenty"]
    bad_line = len(text)
    screen.write_config("\n".join(text) + "\n")
    since = screen.log_size()
    screen.signal(signal.SIGHUP)
    screen.wait_for_log(r"keeping the settings in use", since=since)
    time.sleep(0.5)
    new_lines = screen.log_text()[since:].splitlines()
    check(len(new_lines) == 1, f"a refused reload must log exactly one line, got {len(new_lines)}:\n" +
          "\n".join(new_lines))
    harness.check_search(rf"{screen.config_path}:{bad_line}: limits\.max_connections", new_lines[0],
                         "the refused reload's line")
    c = harness.SmtpClient(new_port, source="127.0.0.9")
    check(c.read_reply(timeout=10).code == 220, "no greeting after a refused reload")
    c.close()
    check(harness.connect_refused(old_port), "the old address is open again after a refused reload")
    screen.stop()


harness.run(main)
