#!/usr/bin/env python3
"""An endless line (10 MB without CRLF) and peers that stop reading (docs/design.md, "Hostile input":
every buffer per connection is bounded; issue 6). For each case: the answer smtpscreen gives,
exactly one DISCONNECT line, and smtpscreen's RSS (VmRSS) grows by less than 30 MiB
over its level before the case:
  1. before the greeting (greet.action = enforce): one PREGREET line (its excerpt is
     short), the bytes are discarded; after the greet wait the client gets the final
     220, an empty line is answered with an error, QUIT with 221;
  2. after the greeting, in the enforce dialog: CRLF after 10 MB gives
     '500 5.5.2 Line too long', then QUIT 221;
  3. during the deep tests: the same 500 5.5.2; then the client can still pass (EHLO,
     MAIL, RCPT) and is handed off;
  4. after a plain handoff, as a command: none of it reaches Postfix, smtpscreen answers
     '500 5.5.2 Line too long' itself (the relay forwards only whole command lines);
  5. after a plain handoff, in DATA (one 10 MB line): smtpscreen's relay refuses the
     message itself ('550 5.5.2 Message line too long', then 421; docs/design.md, "Hostile input" asks it after
     a deep-tested handoff, the relay does it after every handoff);
  6. after a deep-tested handoff, in DATA: '550 5.5.2 Message line too long' then 421
     (smtpscreen reads DATA itself there: docs/design.md, "Hostile input"), the message is not delivered;
  7. a backend that never reads while the client sends 20 MB of DATA: smtpscreen stops
     reading the client (the client's send stalls), memory stays bounded, and the
     session ends by backend.idle_timeout (5s) once the client has gone;
  8. a client that never reads while it pipelines 300,000 NOOPs after the handoff (the
     backend answers each): smtpscreen stops reading the backend, memory stays bounded."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

TEN_MB = 10 * 1024 * 1024
MAX_GROWTH_MIB = 30.0


class Memory:
    def __init__(self, screen):
        self.screen = screen
        self.rows = []

    def around(self, what, fn):
        pid = self.screen.pid
        before = harness.rss_mib(pid)
        sampler = harness.RssSampler(pid, 0.05)
        try:
            result = fn()
        finally:
            peak = sampler.stop()
        after = harness.rss_mib(pid)
        self.rows.append((what, before, peak, after, result))
        harness.log(f"{what}: RSS {before:.1f} -> peak {peak:.1f} -> {after:.1f} MiB; {result}")
        check(peak - before < MAX_GROWTH_MIB,
              f"{what}: smtpscreen's RSS grew by {peak - before:.1f} MiB (from {before:.1f} to {peak:.1f}); "
              f"the bound is {MAX_GROWTH_MIB} MiB")
        return result


def main(env):
    harness.bound_asan_quarantine()
    pf = env.postfix()
    settings = {"greet.wait": "2s", "greet.action": "enforce", "cache.backend": "memory",
                "cache.path": None, "backend.idle_timeout": "20s"}
    screen = env.smtpscreen(postfix=pf, settings=dict(settings))
    deep = env.smtpscreen(postfix=pf, name="deep", settings=harness.deep_settings(dict(settings)))
    noread = harness.scripted_backend(env, "no-read")
    stuck = env.smtpscreen(name="stuck", settings=dict(settings, **{
        "backend.address": f"127.0.0.1:{noread.port}", "backend.idle_timeout": "5s"}))
    chatty = harness.scripted_backend(env, "smtp")
    deaf = env.smtpscreen(name="deaf", settings=dict(settings, **{
        "backend.address": f"127.0.0.1:{chatty.port}"}))
    # Warm up each one with a clean session so that the baseline includes the first use.
    harness.clean_session(screen, pf, source="127.0.0.100", tag="warm")
    mem = Memory(screen)

    # 1. Before the greeting.
    def before_greeting():
        c = harness.SmtpClient(screen.port, source="127.0.13.1", timeout=15)
        port = c.local_port
        sent, how = harness.pump_bytes(c.sock, TEN_MB, pattern=b"A", stall=3, limit=20)
        check(how == "done", f"before the greeting: smtpscreen stopped reading after {sent} bytes ({how})")
        reply = c.read_reply(timeout=10)
        check(reply.code == 220, f"before the greeting: expected the final 220 (enforce), got {reply.text!r}")
        c.send("\r\n")
        empty = c.read_reply(timeout=5)
        check(empty.code >= 500, f"an empty line must get an error, got {empty.text!r}")
        c.expect("QUIT", 221)
        c.check_closed(5)
        m = screen.wait_for_log(rf"PREGREET (\d+) after \S+ from {harness.ip_port('127.0.13.1', port)}: (.*)")
        check(len(m.group(2)) < 400, f"the PREGREET excerpt is {len(m.group(2))} characters long")
        check(len(re.findall(rf"PREGREET .* {re.escape(f'[127.0.13.1]:{port}')}", screen.log_text())) == 1,
              "more than one PREGREET line for one client")
        harness.check_one_disconnect(screen, "127.0.13.1", port, outcome="rejected")
        return f"final {reply.final!r}; empty line: {empty.final!r}"
    mem.around("1 endless line before the greeting", before_greeting)

    # 2. The enforce dialog.
    def enforce_dialog():
        c = harness.SmtpClient(screen.port, source="127.0.13.2", timeout=15)
        port = c.local_port
        c.send("EHLO early\r\n")
        reply = c.read_reply(timeout=8)
        check(reply.code == 220, f"enforce: expected 220, got {reply.text!r}")
        c.drain(0.3, 1)
        sent, how = harness.pump_bytes(c.sock, TEN_MB, pattern=b"B", stall=3, limit=20)
        c.send("\r\n")
        r = c.read_reply(timeout=10)
        check(r.final.startswith("500 5.5.2"), f"enforce: 10 MB then CRLF: expected '500 5.5.2 Line too long', got {r.text!r}")
        c.expect("QUIT", 221)
        harness.check_one_disconnect(screen, "127.0.13.2", port, outcome="rejected")
        return f"{sent} bytes ({how}), then {r.final!r}"
    mem.around("2 endless line in the enforce dialog", enforce_dialog)

    # 3. Deep tests.
    mem.screen = deep
    def deep_tests():
        c = harness.deep_client(deep, "127.0.13.3", timeout=15)
        port = c.local_port
        sent, how = harness.pump_bytes(c.sock, TEN_MB, pattern=b"C", stall=3, limit=20)
        c.send("\r\n")
        r = c.read_reply(timeout=10)
        check(r.final.startswith("500 5.5.2"), f"deep: 10 MB then CRLF: expected '500 5.5.2 Line too long', got {r.text!r}")
        c.expect("EHLO client.example.org", 250)
        c.expect("MAIL FROM:<sender@example.org>", 250)
        rr = c.cmd("RCPT TO:<user@example.test>")
        c.send("QUIT\r\n")
        c.check_closed(5)
        outcome, _ = harness.check_one_disconnect(deep, "127.0.13.3", port)
        return f"{sent} bytes ({how}), then {r.final!r}; RCPT afterwards {rr.final!r}, outcome {outcome}"
    mem.around("3 endless line during the deep tests", deep_tests)

    # 4. After a plain handoff, as a command.
    mem.screen = screen
    def handoff_command():
        c = harness.SmtpClient(screen.port, source="127.0.13.4", timeout=20)
        port = c.local_port
        c.read_greeting()
        c.ehlo()
        sent, how = harness.pump_bytes(c.sock, TEN_MB, pattern=b"D", stall=5, limit=30)
        try:
            c.send("\r\n")
        except OSError:
            pass
        got = c.drain(quiet=1.0, limit=10).decode(errors="replace")
        if not c.eof:
            try:
                c.send("QUIT\r\n")
            except OSError:
                pass
            got += c.drain(quiet=1.0, limit=5).decode(errors="replace")
        c.close()
        check(got.startswith("500 5.5.2 Line too long"),
              f"plain handoff, 10 MB command line: expected smtpscreen's '500 5.5.2 Line too long', got {got!r}")
        outcome, _ = harness.check_one_disconnect(screen, "127.0.13.4", port, timeout=15)
        return f"{sent} bytes ({how}); client got {got.strip()!r}; outcome {outcome}"
    mem.around("4 endless command line after a plain handoff", handoff_command)

    # 5. After a plain handoff, in DATA.
    def handoff_data():
        marker = harness.unique_marker("longline")
        c = harness.SmtpClient(screen.port, source="127.0.13.5", timeout=20)
        port = c.local_port
        c.read_greeting()
        c.ehlo()
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<user@example.test>", 250)
        c.expect("DATA", 354)
        c.send(harness.message_text(marker))
        sent, how = harness.pump_bytes(c.sock, TEN_MB, pattern=b"E", stall=5, limit=30)
        try:
            c.send("\r\n.\r\n")
        except OSError:
            pass
        got = c.drain(quiet=2.0, limit=15).decode(errors="replace")
        c.close()
        check(got.startswith("550 5.5.2") and "421" in got,
              f"plain handoff, 10 MB DATA line: expected '550 5.5.2 Message line too long' and 421, got {got!r}")
        outcome, _ = harness.check_one_disconnect(screen, "127.0.13.5", port, timeout=15, outcome="bad-message")
        pf.check_not_delivered(marker)
        return f"{sent} bytes ({how}); client got {got.strip()!r}; outcome {outcome}"
    mem.around("5 endless DATA line after a plain handoff", handoff_data)

    # 6. After a deep-tested handoff, in DATA.
    mem.screen = deep
    def deep_data():
        marker = harness.unique_marker("deeplong")
        c = harness.deep_client(deep, "127.0.13.6", timeout=20)
        port = c.local_port
        c.expect("EHLO client.example.org", 250)
        c.expect("MAIL FROM:<sender@example.org>", 250)
        c.expect("RCPT TO:<user@example.test>", 250)
        c.expect("DATA", 354)
        c.send(harness.message_text(marker))
        sent, how = harness.pump_bytes(c.sock, TEN_MB, pattern=b"F", stall=5, limit=30)
        try:
            c.send("\r\n.\r\n")
        except OSError:
            pass
        got = c.drain(quiet=1.0, limit=10).decode(errors="replace")
        check(got.startswith("550 5.5.2") and "421" in got,
              f"deep handoff, 10 MB DATA line: expected '550 5.5.2 Message line too long' and 421, got {got!r}")
        c.close()
        harness.check_one_disconnect(deep, "127.0.13.6", port, outcome="bad-message")
        pf.check_not_delivered(marker)
        return f"{sent} bytes ({how}); client got {got.strip()!r}"
    mem.around("6 endless DATA line after a deep-tested handoff", deep_data)

    # 7. A backend that never reads.
    mem.screen = stuck
    def backend_never_reads():
        c = harness.SmtpClient(stuck.port, source="127.0.13.7", timeout=20)
        port = c.local_port
        reply = c.read_greeting()
        check("scripted.test" in reply.final, f"expected the backend's 220, got {reply.text!r}")
        c.send("DATA\r\n")   # never answered: the backend does not read
        sent, how = harness.pump_bytes(c.sock, 2 * TEN_MB, pattern=b"line of text\r\n", stall=3, limit=30)
        check(how == "stalled", f"the client sent {sent} bytes ({how}) to a backend that reads nothing: "
                                f"smtpscreen must stop reading (a bounded buffer)")
        c.close()
        # smtpscreen is not reading the client (that is the back-pressure), so it cannot
        # see it leave: backend.idle_timeout (5s) ends the session.
        outcome, secs = harness.check_one_disconnect(stuck, "127.0.13.7", port, timeout=15,
                                                     outcome="idle-timeout|handoff")
        return f"client's send stalled after {sent} bytes; outcome {outcome} after {secs}s"
    mem.around("7 backend never reads, client sends 20 MB", backend_never_reads)

    # 8. A client that never reads.
    mem.screen = deaf
    def client_never_reads():
        c = harness.SmtpClient(deaf.port, source="127.0.13.8", timeout=20)
        port = c.local_port
        c.read_greeting()
        sent, how = harness.pump_bytes(c.sock, 300000 * 6, pattern=b"NOOP\r\n", stall=3, limit=30)
        rec = harness.wait_until(
            lambda: next((r for r in chatty.connections if r["proxy"] and r["proxy"][1] == port), None), 10,
            what=f"the backend's record of the client's port {port}")
        time.sleep(2)   # let the relay run into the client's full receive buffer
        replies = rec["replies"]
        check(replies > 1000, f"the backend answered only {replies} of the client's NOOPs: the relay stalled early")
        c.close()
        outcome, _ = harness.check_one_disconnect(deaf, "127.0.13.8", port, timeout=10)
        return f"client sent {sent} bytes ({how}); backend sent {replies} replies; outcome {outcome}"
    mem.around("8 client never reads, pipelines 300,000 NOOPs", client_never_reads)

    for s in (screen, deep, stuck, deaf):
        check(s.running(), f"{s.name} died")
        s.stop()


harness.run(main, timeout=170)
