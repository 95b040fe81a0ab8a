#!/usr/bin/env python3
"""The tarpit (issue 19; docs/design.md, "Edge defences"; OpenBSD spamd's stutter), with
the private Postfix behind, greet.action = tarpit, tarpit.delay = 20ms,
tarpit.max_connections = 3, limits.command_time_limit = 4s:
  - a pregreet bot gets the enforce dialog (the final 220, HELO, MAIL, its RCPT refused
    with '550 5.5.1 Protocol error' and postscreen's NOQUEUE line, QUIT), and every
    reply of it arrives one byte per delay: no byte comes sooner after the first than
    its place in the reply allows (the check fails on a server that sends a reply at
    once); the log has PREGREET, 'TARPIT [ip]:port', and 'DISCONNECT ... tarpit';
  - three bots fill the tarpit; the fourth is dropped at once at the end of its greet
    wait ('521 5.5.1 Protocol error' in one piece, then the close), and the metrics say
    smtpscreen_tarpit_connections 3, smtpscreen_tarpit_full_total 1;
  - while the three are held, a clean client is delivered through Postfix as usual;
  - a held bot that says nothing after its greeting is ended by the command time limit
    (COMMAND TIME LIMIT, 421), so the tarpit holds no one forever; its slot is free
    again: a new bot is tarpitted, and the gauge is back to 0 once every bot is gone;
  - deep.action = tarpit (a second instance, deep.non_smtp_command on): a client that
    sends an HTTP request in the deep tests' dialog gets the NON-SMTP COMMAND line,
    TARPIT, and the reply to that line and every later one at the same pace;
  - ban.action = tarpit (a third instance, ban.after = 1/1h): a bot banned for its
    pregreet comes back and is tarpitted from its greeting on (no greet wait), its
    RCPT refused with '550 5.7.1 Service unavailable', paced, DISCONNECT tarpit."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Failure, check  # noqa: E402

DELAY = 0.020
MAX = 3
TIME_LIMIT = 4.0
GREET_WAIT = 0.3


def read_paced_reply(client, timeout=15):
    """One whole reply, read as it arrives: (text, [arrival time of each byte])."""
    check(not client.buf, f"bytes left over before a paced reply: {client.buf!r}")
    data, times = b"", []
    deadline = time.monotonic() + timeout
    while True:
        lines = data.split(b"\r\n")
        if data.endswith(b"\r\n") and (len(lines[-2]) < 4 or lines[-2][3:4] == b" "):
            return data.decode(errors="replace"), times
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Failure(f"timed out reading a paced reply; so far {data!r}")
        client.sock.settimeout(remaining)
        chunk = client.sock.recv(4096)
        if not chunk:
            raise Failure(f"closed while reading a paced reply; so far {data!r}")
        now = time.monotonic()
        data += chunk
        times += [now] * len(chunk)


def check_paced(text, times, what):
    """No byte may arrive sooner than the pace allows. The first read holds k bytes, and
    however late it came (a busy machine), byte k was sent after it and every later byte
    one delay after the one before: byte i cannot arrive sooner than i - k delays after
    the first read. A server that sends the reply at once fails: the first read holds it
    all, or the next byte arrives at once."""
    n = len(times)
    check(n >= 6, f"{what}: a reply of {n} bytes is too short to show a pace: {text!r}")
    k = times.count(times[0])
    check(k <= n // 2, f"{what}: {k} of the {n} bytes of {text!r} came in the first read: not paced")
    for i in range(k, n):
        gap = times[i] - times[0]
        check(gap >= (i - k) * DELAY * 0.9,
              f"{what}: byte {i} of {text!r} arrived {gap * 1000:.1f} ms after the first read ({k} bytes); at one "
              f"byte per {DELAY * 1000:.0f} ms it cannot come before {(i - k) * DELAY * 900:.0f} ms")
    took = times[-1] - times[0]
    harness.log(f"{what}: {n} bytes in {took:.2f} s ({took / (n - 1) * 1000:.1f} ms a byte)")
    return took


def tarpitted_bot(screen, source):
    """A pregreet bot that went to the tarpit: its client, its port, the greeting's text."""
    c = harness.SmtpClient(screen.port, source=source, timeout=15)
    port = c.local_port
    first = c.read_line(timeout=5)
    check(first.startswith("220-"), f"[{source}]: the greet wait's first line, got {first!r}")
    c.send("EHLO bot.example\r\n")  # before the greet wait ends
    screen.wait_for_log(rf"TARPIT {harness.ip_port(source, port)}$", timeout=10)
    return c, port


def main(env):
    pf = env.postfix()
    stats_port = harness.free_port()
    screen = env.smtpscreen(postfix=pf, settings={
        "greet.action": "tarpit", "greet.wait": "300ms", "greet.hostname": "mx.tarpit.example",
        "tarpit.delay": "20ms", "tarpit.max_connections": str(MAX),
        "limits.command_time_limit": "4s",
        "stats.listen": f"127.0.0.1:{stats_port}"})
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics")

    # --- the pace, through a whole enforce dialog
    bot, port = tarpitted_bot(screen, "127.0.0.9")
    screen.wait_for_log(harness.re_pregreet("127.0.0.9", port) + r"EHLO bot\.example")
    text, times = read_paced_reply(bot)
    check(text.startswith("220 ") and "backend.test" not in text, f"the tarpit's own final 220, got {text!r}")
    check_paced(text, times, "greeting")
    for command, code in (("HELO bot.example", "250"), ("MAIL FROM:<bot@example.org>", "250"),
                          ("RCPT TO:<user@example.test>", "550 5.5.1 Protocol error"), ("QUIT", "221")):
        bot.send(command + "\r\n")
        text, times = read_paced_reply(bot)
        check(text.startswith(code), f"{command}: expected {code}, got {text!r}")
        check_paced(text, times, command.split()[0])
    bot.check_closed(5, "tarpitted bot after its 221")
    screen.wait_for_log(harness.re_noqueue(
        "127.0.0.9", r"550 5\.5\.1 Protocol error; from=<bot@example\.org>, to=<user@example\.test>, "
                     r"proto=SMTP, helo=<bot\.example>", port))
    harness.check_one_disconnect(screen, "127.0.0.9", port, outcome="tarpit")

    # --- the bound: three held, the fourth dropped at once
    held = [tarpitted_bot(screen, f"127.0.1.{i}") for i in range(1, MAX + 1)]
    t_held = time.monotonic()
    extra = harness.SmtpClient(screen.port, source="127.0.1.99", timeout=10)
    extra_port = extra.local_port
    first = extra.read_line(timeout=5)
    check(first.startswith("220-"), f"fourth bot: the greet wait's first line, got {first!r}")
    extra.send("EHLO bot.example\r\n")
    t_sent = time.monotonic()
    text, times = read_paced_reply(extra, timeout=5)
    check(text == "521 5.5.1 Protocol error\r\n", f"the fourth bot must be dropped (521), got {text!r}")
    check(times[-1] - t_sent < GREET_WAIT + 1.5, f"the 521 came {times[-1] - t_sent:.2f} s after the bot spoke")
    check(times[-1] - times[0] < 2 * DELAY, "the 521 of a full tarpit came slowly: it was tarpitted")
    extra.check_closed(3, "fourth bot after its 521")
    harness.check_one_disconnect(screen, "127.0.1.99", extra_port, outcome="dropped")
    screen.check_no_log(rf"TARPIT {harness.ip_port('127.0.1.99', extra_port)}")
    m = harness.scrape_metrics(stats_port)
    check(m.get("smtpscreen_tarpit_connections") == MAX, f"gauge with {MAX} held: {m.get('smtpscreen_tarpit_connections')}")
    check(m.get("smtpscreen_tarpit_full_total") == 1, f"full counter: {m.get('smtpscreen_tarpit_full_total')}")
    check(m.get('smtpscreen_sessions{phase="tarpit"}') == MAX, "sessions in the tarpit phase")

    # --- a clean client meanwhile
    harness.clean_session(screen, pf, source="127.0.2.7")
    m = harness.scrape_metrics(stats_port)
    check(m.get("smtpscreen_tarpit_connections") == MAX, "the tarpitted bots were let go during the clean session")
    check(time.monotonic() - t_held < TIME_LIMIT, "the checks while held took longer than the time limit")

    # --- the time limit ends a silent tarpitted bot; its slot is free again
    c, p = held[0]
    text, _ = read_paced_reply(c)
    check(text.startswith("220 "), f"held bot's greeting, got {text!r}")
    try:
        reply = c.read_reply(timeout=TIME_LIMIT + 5)
    except Failure as e:
        raise Failure(f"a silent tarpitted bot was not ended by limits.command_time_limit: {e}") from None
    check(reply.final.startswith("421 4.4.2"), f"the time limit's 421, got {reply.text!r}")
    c.check_closed(5, "silent tarpitted bot after its 421")
    screen.wait_for_log(rf"COMMAND TIME LIMIT from {harness.ip_port('127.0.1.1', p)}")
    _, secs = harness.check_one_disconnect(screen, "127.0.1.1", p, outcome="tarpit")
    check(secs >= TIME_LIMIT, f"the silent bot was ended after {secs} s, before the time limit")
    again, again_port = tarpitted_bot(screen, "127.0.1.50")
    for c, _ in held[1:] + [(again, again_port)]:
        c.close()
    for ip, p in [("127.0.1.2", held[1][1]), ("127.0.1.3", held[2][1]), ("127.0.1.50", again_port)]:
        harness.check_one_disconnect(screen, ip, p, outcome="tarpit")
    m = harness.scrape_metrics(stats_port)
    check(m.get("smtpscreen_tarpit_connections") == 0, f"gauge after: {m.get('smtpscreen_tarpit_connections')}")
    check(m.get('smtpscreen_sessions_total{outcome="tarpit"}') == 5, "five sessions ended in the tarpit")
    check("127.0.0.9" not in pf.log() and "127.0.1." not in pf.log(), "Postfix saw a tarpitted bot")

    # --- deep.action = tarpit: the replies from the failed command on go out slowly
    deep = env.smtpscreen(postfix=pf, name="deep", settings=harness.deep_settings({
        "deep.action": "tarpit", "greet.wait": "300ms", "greet.hostname": "mx.tarpit.example",
        "tarpit.delay": "20ms"}))
    c = harness.deep_client(deep, "127.0.3.1")
    p = c.local_port
    c.send("GET / HTTP/1.0\r\n")
    text, times = read_paced_reply(c)
    check(text.startswith("502 5.5.2"), f"deep.action = tarpit: the reply to GET, got {text!r}")
    check_paced(text, times, "deep GET")
    deep.wait_for_log(rf"NON-SMTP COMMAND from {harness.ip_port('127.0.3.1', p)} after CONNECT: GET / HTTP/1\.0")
    deep.wait_for_log(rf"TARPIT {harness.ip_port('127.0.3.1', p)}$")
    c.send("QUIT\r\n")
    text, times = read_paced_reply(c)
    check(text.startswith("221 "), f"deep.action = tarpit: QUIT, got {text!r}")
    check_paced(text, times, "deep QUIT")
    c.check_closed(5, "deep-tarpitted client after its 221")
    harness.check_one_disconnect(deep, "127.0.3.1", p, outcome="tarpit")

    # --- ban.action = tarpit: a banned bot comes back to the tarpit
    banning = env.smtpscreen(postfix=pf, name="ban", settings={
        "ban.after": "1/1h", "ban.action": "tarpit", "greet.action": "drop", "greet.wait": "300ms",
        "greet.hostname": "mx.tarpit.example", "tarpit.delay": "20ms"})
    harness.pregreet_dropped(banning, "127.0.4.1")
    banning.wait_for_log(r"BANNED \[127\.0\.4\.1\]:\d+ until ")
    c = harness.SmtpClient(banning.port, source="127.0.4.1", timeout=15)
    p = c.local_port
    text, times = read_paced_reply(c)
    check(text.startswith("220 "), f"a banned bot under ban.action = tarpit: the tarpit's own 220, got {text!r}")
    check_paced(text, times, "banned greeting")
    banning.wait_for_log(rf"TARPIT {harness.ip_port('127.0.4.1', p)}$")
    for command, code in (("HELO bot.example", "250"), ("MAIL FROM:<bot@example.org>", "250"),
                          ("RCPT TO:<user@example.test>", "550 5.7.1 Service unavailable"), ("QUIT", "221")):
        c.send(command + "\r\n")
        text, times = read_paced_reply(c)
        check(text.startswith(code), f"banned, {command}: expected {code}, got {text!r}")
        check_paced(text, times, "banned " + command.split()[0])
    c.check_closed(5, "banned tarpitted bot after its 221")
    harness.check_one_disconnect(banning, "127.0.4.1", p, outcome="tarpit")


if __name__ == "__main__":
    harness.run(main)
