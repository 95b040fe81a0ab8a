#!/usr/bin/env python3
"""Two smtpscreen instances behind HAProxy (the shipped conf/haproxy.cfg) share one real
redis-server (cache.backend = redis; one reaches it over TCP, the other over its unix
socket) in front of one Postfix:

  - a client that passes the greet wait through HAProxy, on whichever instance HAProxy
    chose, is PASS OLD on the other instance (handed off at once, no greet wait), and
    PASS OLD through HAProxy again;
  - its record is the documented key, `smtpscreen:<client address>` (the default
    cache.redis_prefix): a hash whose `pregreet` field holds the pass's expiry in Unix
    milliseconds, and whose Redis expiry is no later than that;
  - when that pass expires, Redis has removed the key and the client goes through the
    greet wait again (PASS NEW) on either instance."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.0.41"
TTL = 10  # seconds, every pass: long enough for the PASS OLD sessions, short for the expiry
SHORT_TTLS = {"cache.pregreet_ttl": f"{TTL}s", "cache.dnsbl_min_ttl": f"{TTL}s",
              "cache.dnsbl_max_ttl": f"{TTL}s", "cache.deep_ttl": f"{TTL}s"}


def main(env):
    redis = env.redis(unix=True)
    postfix = env.postfix()
    screens = [env.smtpscreen(name=name, postfix=postfix, settings=dict(
        harness.BEHIND_HAPROXY, **SHORT_TTLS, **redis.cache_settings(use_unix=unix)))
        for name, unix in (("screen1", False), ("screen2", True))]
    hap = env.haproxy([(s.name, s) for s in screens])
    hap.wait_servers_up()
    key = f"smtpscreen:{CLIENT}"

    first = harness.balanced_session(screens, postfix, CLIENT, balancer_port=hap.port, expect="new")
    stored_at = time.time()
    other = next(s for s in screens if s is not first.screen)

    check(redis.keys() == [key], f"Redis keys after one pass: {redis.keys()}, expected [{key!r}]")
    record = redis.command("HGETALL", key)
    fields = {record[i].decode(): record[i + 1].decode() for i in range(0, len(record), 2)}
    check(set(fields) == {"pregreet"} and fields["pregreet"].isdigit(),
          f"{key}: expected one field, pregreet = <Unix ms>, got {fields}")
    until_ms = int(fields["pregreet"])
    check(abs(until_ms / 1000 - (stored_at + TTL)) < 3,
          f"{key}: pregreet pass until {until_ms} ms, expected about now + {TTL}s ({(stored_at + TTL) * 1000:.0f})")
    pttl = redis.command("PTTL", key)
    check(0 < pttl <= TTL * 1000 and until_ms - (time.time() * 1000 + pttl) > -1500,
          f"{key}: Redis expiry in {pttl} ms; it must come no later than the pass ({until_ms} ms)")

    # The other instance knows the client: the test plays the balancer and picks it.
    harness.balanced_session(screens, postfix, CLIENT, balancer_port=hap.port, via=other, expect="old")
    again = harness.balanced_session(screens, postfix, CLIENT, balancer_port=hap.port, expect="old")
    harness.log(f"{first.screen.name} passed it, {other.name} knew it, {again.screen.name} knew it through HAProxy")

    # Redis drops the record when the pass ends; both instances forget the client.
    harness.wait_until(lambda: redis.command("EXISTS", key) == 0, TTL + 5, 0.2,
                       what=f"Redis expiring {key} (pass until {until_ms} ms)")
    check(time.time() * 1000 >= until_ms - 1500,
          f"Redis removed {key} at {time.time() * 1000:.0f} ms, before its pass ended ({until_ms} ms)")
    harness.balanced_session(screens, postfix, CLIENT, balancer_port=hap.port, expect="new")
    check(redis.keys() == [key], f"Redis keys after the new pass: {redis.keys()}")


harness.run(main, timeout=150)
