#!/usr/bin/env python3
"""cache.cleanup_interval removes expired records from the LMDB cache while the daemon
runs, with postscreen's log line 'cache lmdb:PATH full cleanup: retained=N dropped=M
entries' (README, "The cache file"): a first cleanup a second after start, then one
every interval.

Two clients pass with every TTL at 2s; a SIGHUP then sets the TTLs to 1h and a third
client passes. The cleanups that follow drop exactly the two expired records and keep
the live one (retained=1), `smtpscreen cache list` shows only the third client, and the
two expired ones get the greet wait again. With cache.cleanup_interval = 0 no cleanup
runs."""
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

A, B, C = "127.0.0.90", "127.0.0.91", "127.0.0.92"
INTERVAL = 3
TTLS = ("cache.pregreet_ttl", "cache.dnsbl_min_ttl", "cache.dnsbl_max_ttl", "cache.deep_ttl")


def pass_new(screen, ip):
    c = harness.SmtpClient(screen.port, source=ip)
    first = c.read_line(timeout=10)
    port = c.local_port
    reply = c.read_reply(timeout=10)
    check(first == "220-screen.test ESMTP" and reply.code == 220, f"{ip}: expected the greet wait then 220, "
                                                                  f"got {first!r} {reply!r}")
    c.expect("QUIT", 221)
    c.close()
    screen.wait_for_log(harness.re_pass_new(ip, port))


def cleanups(screen, path):
    pattern = rf"cache lmdb:{re.escape(path)} full cleanup: retained=(\d+) dropped=(\d+) entries$"
    return [(int(m.group(1)), int(m.group(2))) for m in re.finditer(pattern, screen.log_text(), re.M)]


def main(env):
    pf = env.postfix()
    settings = {"dnsbl.sites": None, "cache.cleanup_interval": f"{INTERVAL}s"}
    settings.update({k: "2s" for k in TTLS})
    screen = env.smtpscreen(postfix=pf, settings=settings)
    path = screen.settings["cache.path"]
    harness.wait_until(lambda: cleanups(screen, path), 5, what="the first cleanup, a second after start")
    check(cleanups(screen, path)[0] == (0, 0), f"the first cleanup of an empty cache: {cleanups(screen, path)}")

    threads = [threading.Thread(target=pass_new, args=(screen, ip)) for ip in (A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    listed = screen.run_cli("-c", screen.config_path, "cache", "list").stdout
    check(A in listed and B in listed, f"both clients must be cached after passing: {listed!r}")

    screen.settings.update({k: "1h" for k in TTLS})
    screen.write_config()
    since = screen.log_size()
    screen.signal(signal.SIGHUP)
    screen.wait_for_log(r"SIGHUP: reloaded", since=since)
    pass_new(screen, C)
    seen = len(cleanups(screen, path))

    # Every cleanup after the two passes: together they drop A and B (each once its
    # 2s are over), and the last keeps C.
    def done():
        after = cleanups(screen, path)[seen:]
        return after and after[-1] == (1, 0) and sum(d for _, d in cleanups(screen, path)[1:]) == 2
    harness.wait_until(done, 4 * INTERVAL + 5, what="cleanups that drop the 2 expired records and keep 1")
    listed = screen.run_cli("-c", screen.config_path, "cache", "list").stdout.split()
    check(listed[:1] == [C] and A not in listed and B not in listed,
          f"after the cleanups only {C} may be in the cache: {listed}")
    pass_new(screen, A)   # gone from the cache: the greet wait again
    screen.stop()

    never = env.smtpscreen(name="never", postfix=pf, settings={"dnsbl.sites": None, "cache.cleanup_interval": "0"})
    time.sleep(2.5)
    check(not re.search(r"full cleanup", never.log_text()), "cache.cleanup_interval = 0 must never clean up")
    never.stop()


harness.run(main)
