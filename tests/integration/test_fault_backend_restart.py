#!/usr/bin/env python3
"""The backend killed and restarted while sessions are in flight (issue 6): four client
threads send messages through smtpscreen into the private Postfix without pause, each
message with a unique marker; meanwhile Postfix is killed ('postfix abort': every
smtpd dies at once), left down for 2s, started again, then stopped in an orderly way
('postfix stop') and started again. Sessions caught in the greet wait, in the middle
of a command dialog and in the middle of DATA:
  - see 421/451 (4xx) or a closed connection, never a 250 for mail that was not
    accepted: every message whose end of data got 250 at the client is delivered;
  - while Postfix is down, new clients get '421 4.3.2 Service temporarily unavailable';
  - every session ends with exactly one DISCONNECT line;
  - after the restarts, clients are served again and smtpscreen never exited."""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

THREADS = 4


class Client(threading.Thread):
    def __init__(self, screen, source, stop):
        super().__init__(daemon=True)
        self.screen, self.source, self.stop = screen, source, stop
        self.results = []   # (marker, outcome, detail, port)

    def one(self, n):
        marker = harness.unique_marker(f"restart-{self.source.replace('.', '_')}-{n}")
        c = harness.SmtpClient(self.screen.port, source=self.source, timeout=8)
        port = c.local_port
        stage = "greeting"
        try:
            reply = c.read_greeting(timeout=8)
            if reply.code != 220:
                return marker, f"{reply.code}", f"{stage}: {reply.final}", port
            for stage, line, code in (("ehlo", "EHLO client.example.org", 250),
                                      ("mail", "MAIL FROM:<sender@example.org>", 250),
                                      ("rcpt", "RCPT TO:<user@example.test>", 250),
                                      ("data", "DATA", 354)):
                r = c.cmd(line, timeout=8)
                if r.code != code:
                    return marker, f"{r.code}", f"{stage}: {r.final}", port
            stage = "message"
            body = harness.message_text(marker) + "".join(f"filler line {i}\r\n" for i in range(200))
            # Two halves, a pause between: a kill can land in the middle of DATA.
            half = len(body) // 2
            c.send(body[:half])
            time.sleep(0.05)
            c.send(body[half:] + ".\r\n")
            r = c.read_reply(timeout=8)
            c.send("QUIT\r\n")
            return marker, f"{r.code}", f"end of data: {r.final}", port
        except harness.Failure as e:
            text = str(e)
            kind = "closed" if "closed" in text else "timeout" if "timed out" in text else "error"
            return marker, kind, f"{stage}: {text[:120]}", port
        except OSError as e:
            return marker, "closed", f"{stage}: {e!r}", port
        finally:
            c.close()

    def run(self):
        n = 0
        while not self.stop.is_set() and n < 2000:
            n += 1
            r = self.one(n)
            self.results.append(r)
            if r[1] != "250":
                time.sleep(0.1)  # the backend is down: do not hammer


def main(env):
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={
        "greet.wait": "1s", "cache.backend": "memory", "cache.path": None,
        "backend.connect_timeout": "2s"})
    stop = threading.Event()
    clients = [Client(screen, f"127.0.10.{i + 1}", stop) for i in range(THREADS)]
    for cl in clients:
        cl.start()
    time.sleep(3)
    harness.log("killing Postfix (postfix abort)")
    harness.abort_postfix(pf)
    time.sleep(0.3)
    # While it is down: a new client gets 421 4.3.2.
    c = harness.SmtpClient(screen.port, source="127.0.0.7", timeout=8)
    reply = c.read_greeting()
    check(reply.code == 421 and reply.final.startswith("421 4.3.2 Service temporarily unavailable"),
          f"backend down: expected 421 4.3.2, got {reply.text!r}")
    c.close()
    time.sleep(1.5)
    pf.start()
    harness.log("Postfix restarted")
    time.sleep(3)
    harness.log("stopping Postfix (postfix stop)")
    pf.stop()
    time.sleep(2)
    pf.start()
    harness.log("Postfix started again")
    time.sleep(3)
    stop.set()
    for cl in clients:
        cl.join(30)
    check(screen.running(), "smtpscreen exited")

    results = [r for cl in clients for r in cl.results]
    by_outcome = {}
    for _, outcome, _, _ in results:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    accepted = [r for r in results if r[1] == "250"]
    harness.log(f"{len(results)} sessions: {by_outcome}")
    for marker, outcome, detail, _ in results:
        if outcome != "250":
            check(outcome in ("closed",) or outcome[0] in "45",
                  f"session for {marker}: unexpected outcome {outcome} ({detail})")
    check(len(accepted) >= 10, f"only {len(accepted)} messages were accepted: the test did not exercise much")
    check(by_outcome.get("421", 0) + by_outcome.get("closed", 0) >= 1,
          f"no session saw the backend die: {by_outcome}")
    # Every 250 is delivered (Postfix's queue survives its restart), and accepted by Postfix
    # exactly once. Accepted, not delivered: 'postfix abort' can kill qmgr after a delivery
    # and before it removes the queue file, and the restarted Postfix then delivers that
    # queue file again (its own at-least-once rule). Such a copy carries the same queue ID
    # in its Received header; a message smtpscreen sent into Postfix twice would carry two.
    marker_rx = re.compile(r"Message-ID: <(smtpscreen-it-restart-[^@>]+)@", re.I)
    queue_id_rx = re.compile(r"^Received: from .*?\bwith E?SMTP id ([0-9A-Za-z]+)", re.M | re.S)

    def delivered_queue_ids():
        ids = {}
        for _, text in pf.messages():
            queue_id = queue_id_rx.search(text)
            for m in marker_rx.findall(text):
                ids.setdefault(m, []).append(queue_id.group(1) if queue_id else None)
        return ids

    deadline = time.monotonic() + 30
    while True:
        counts = delivered_queue_ids()
        missing = [r[0] for r in accepted if r[0] not in counts]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check(not missing, f"{len(missing)} messages got 250 at the client but were never delivered: {missing[:5]}")
    check(all(None not in ids for ids in counts.values()),
          "a delivered message has no 'with ESMTP id' Received header: cannot tell its queue file")
    twice = {m: ids for m, ids in counts.items() if len(set(ids)) > 1}
    check(not twice, f"messages accepted by Postfix more than once (queue IDs): {list(twice.items())[:5]}")
    redelivered = {m: ids for m, ids in counts.items() if len(ids) > 1}
    if redelivered:
        harness.log(f"delivered again by the restarted Postfix from the same queue file: {list(redelivered.items())[:5]}")
    not_acked = [r for r in results if r[1] != "250" and r[0] in counts]
    harness.log(f"{len(accepted)} accepted and delivered; {len(not_acked)} delivered without a 250 at the "
                f"client (reply lost when the backend died): {[r[2] for r in not_acked][:3]}")
    for r in results:
        if r[1] not in ("250", "421"):
            harness.log(f"  {r[1]}: {r[2]}")
    # One DISCONNECT per session (a source port can come round again for a later session
    # from the same address: count the sessions per address and port).
    time.sleep(1)
    sessions = {}
    for cl in clients:
        for marker, outcome, detail, port in cl.results:
            sessions.setdefault((cl.source, port), []).append((outcome, detail))
    for (src, port), seen in sessions.items():
        lines = harness.disconnect_lines(screen, src, port)
        check(len(lines) == len(seen),
              f"{len(seen)} session(s) from [{src}]:{port} ({seen}) but {len(lines)} DISCONNECT lines: {lines}")
    harness.clean_session(screen, pf, source="127.0.0.8", tag="after-restart")
    screen.stop()


harness.run(main, timeout=170)
