#!/usr/bin/env python3
"""Redis frozen, then killed, then back, in the middle of a run of 200 clean clients
through HAProxy (the shipped conf/haproxy.cfg) in front of two smtpscreen instances
that share it (cache.backend = redis, cache.redis_timeout at its default, 200ms):

  - no message is lost: every client's message gets its 250, and Postfix delivers each
    exactly once;
  - no greeting waits for Redis: every client gets its final 220 no later than
    greet.wait + cache.redis_timeout + a margin, also the ones that connected while
    Redis was frozen (SIGSTOP: connections open, nothing answered) or dead (SIGKILL);
  - each instance logs the outage once and its end once, not once per session;
  - once Redis runs again (empty: it keeps nothing on disk), a client that passes on
    one instance is PASS OLD on the other again."""
import os
import queue
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENTS = [f"127.0.1.{n}" for n in range(1, 201)]
CONCURRENCY = 10
GREET_WAIT = 1.0
REDIS_TIMEOUT = 0.2  # cache.redis_timeout's default
MARGIN = 1.3         # the handoff (Postfix forks an smtpd for the 220) on a busy 2-core
#                      machine; a session that waited for a frozen Redis would be late by
#                      up to the whole freeze (FROZEN_FOR)
FREEZE_AFTER = 40    # clients done before Redis is frozen
FROZEN_FOR = 3.0
DEAD_FOR = 2.0
# smtpscreen's lines for a Redis outage and its end (README, "Redis").
RE_OUTAGE = r"cache: Redis at \S+ unreachable: "
RE_BACK = r"cache: Redis at \S+ is back"


class Run:
    """The 200 clients, CONCURRENCY at a time, each with its own marker; what each got."""

    def __init__(self, port):
        self.port = port
        self.todo = queue.Queue()
        for i, src in enumerate(CLIENTS):
            self.todo.put((i, src))
        self.results = [None] * len(CLIENTS)
        self.done = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(CONCURRENCY)]

    def worker(self):
        while True:
            try:
                i, src = self.todo.get_nowait()
            except queue.Empty:
                return
            marker = harness.unique_marker(f"outage{i}")
            started = time.monotonic()
            r = {"source": src, "marker": marker, "started": started}
            try:
                c = harness.SmtpClient(self.port, source=src, timeout=20)
                greeting = c.read_greeting(timeout=15, code=220)
                r["t_final"] = greeting.t_final
                r["greeting"] = greeting.text
                c.send_mail(marker)
                c.close()
                r["ok"] = True
            except Exception as e:  # recorded and checked below, with the others
                r["error"] = f"{type(e).__name__}: {e}"
            r["ended"] = time.monotonic()
            with self.lock:
                self.results[i] = r
                self.done += 1

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        check(not any(t.is_alive() for t in self.threads), f"the clients did not finish within {timeout}s")


def main(env):
    redis = env.redis()
    postfix = env.postfix()
    screens = [env.smtpscreen(name=name, postfix=postfix, settings=dict(
        harness.BEHIND_HAPROXY, **redis.cache_settings(), **{"greet.wait": f"{GREET_WAIT:g}s"}))
        for name in ("screen1", "screen2")]
    hap = env.haproxy([(s.name, s) for s in screens])
    hap.wait_servers_up()

    run = Run(hap.port)
    run.start()
    harness.wait_until(lambda: run.done >= FREEZE_AFTER, 120, 0.05, what=f"{FREEZE_AFTER} clients done")
    redis.freeze()
    frozen_at = time.monotonic()
    time.sleep(FROZEN_FOR)
    redis.kill()
    killed_at = time.monotonic()
    time.sleep(DEAD_FOR)
    redis.start()
    back_at = time.monotonic()
    # Each instance reconnects on its own backoff; from then on it stores passes again.
    for s in screens:
        s.wait_for_log(RE_BACK, timeout=15)
    using_it_again = time.monotonic()
    run.join(120)
    harness.log(f"200 clients done; Redis frozen {FROZEN_FOR:g}s and dead {DEAD_FOR:g}s during the run")

    errors = [r for r in run.results if not r.get("ok")]
    check(not errors, f"{len(errors)} client(s) failed: " + "; ".join(f"[{r['source']}] {r['error']}" for r in errors[:5]))
    limit = GREET_WAIT + REDIS_TIMEOUT + MARGIN
    late = sorted((r for r in run.results if r["t_final"] > limit), key=lambda r: -r["t_final"])
    worst = max(r["t_final"] for r in run.results)
    check(not late, f"{len(late)} greeting(s) later than greet.wait + cache.redis_timeout + {MARGIN}s "
                    f"= {limit:.1f}s: " + ", ".join(f"[{r['source']}] {r['t_final']:.2f}s" for r in late[:5]))
    in_freeze = [r for r in run.results if frozen_at <= r["started"] < killed_at]
    while_dead = [r for r in run.results if killed_at <= r["started"] < back_at]
    after = [r for r in run.results if r["started"] >= using_it_again]
    check(in_freeze and while_dead and len(after) >= 10,
          f"the fault missed the middle of the run: {len(in_freeze)} client(s) started while Redis was frozen, "
          f"{len(while_dead)} while it was dead, {len(after)} after it came back")
    harness.log(f"greetings: latest {worst:.2f}s (limit {limit:.1f}s); {len(in_freeze)} clients started while "
                f"Redis was frozen, {len(while_dead)} while it was dead, {len(after)} after")

    markers = [r["marker"] for r in run.results]

    def delivered_counts():
        counts = dict.fromkeys(markers, 0)
        for _, text in postfix.messages():
            m = re.search(r"^Subject: (\S+)", text, re.M)
            if m and m.group(1) in counts:
                counts[m.group(1)] += 1
        return counts
    harness.wait_until(lambda: all(delivered_counts().values()), 60, 0.5, what="every message delivered")
    time.sleep(1)  # a duplicate would arrive right behind
    counts = delivered_counts()
    twice = [m for m, n in counts.items() if n != 1]
    check(not twice, f"{len(twice)} message(s) delivered other than once: {[(m, counts[m]) for m in twice[:5]]}")
    queued = harness.postfix_queued_ids(postfix)
    check(len(queued) == len(CLIENTS), f"Postfix queued {len(queued)} messages for {len(CLIENTS)} clients")

    # One line for the outage and one for its end, per instance (each has one
    # connection to Redis).
    for s in screens:
        outages = re.findall(RE_OUTAGE, s.log_text(), re.M)
        backs = re.findall(RE_BACK, s.log_text(), re.M)
        check(len(outages) == 1 and len(backs) == 1,
              f"{s.name}: {len(outages)} outage line(s) and {len(backs)} back line(s) for one outage; log:\n"
              f"{harness.tail(s.log_text(), 30)}")

    # The restarted Redis came up empty; every client that passed once both instances
    # were back on it is in it.
    keys = set(redis.keys())
    missing = [r["source"] for r in after if f"smtpscreen:{r['source']}" not in keys]
    check(not missing, f"{len(missing)} of the {len(after)} clients that passed after the outage are not in "
                       f"Redis: {missing[:5]}; it holds {len(keys)} keys")

    # Shared again: passed on one instance, known on the other.
    first = harness.balanced_session(screens, postfix, "127.0.0.51", balancer_port=hap.port, expect="new")
    other = next(s for s in screens if s is not first.screen)
    harness.balanced_session(screens, postfix, "127.0.0.51", balancer_port=hap.port, via=other, expect="old")
    check("smtpscreen:127.0.0.51" in redis.keys(), f"the restarted Redis has no record: {redis.keys()}")


harness.run(main, timeout=170)
