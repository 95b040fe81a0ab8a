"""Scenarios several tests share: a clean client end to end (straight to smtpscreen or
through a load balancer in front of several instances), a deep-tested client's
greeting, the hostile-input targets, SMTP smuggling payloads."""

import re
import time

from .backends import scripted_backend
from .checks import check, log, unique_marker, wait_until
from .log_lines import check_one_disconnect, ip_port, re_connect, re_disconnect, re_pass_new, re_pass_old
from .postfix import postfix_client_regex
from .processes import rss_mib
from .proxy_protocol import proxy_v2_header
from .smtp_client import SmtpClient
from .smtpscreen import bound_asan_quarantine, duration_seconds

__all__ = ["CLEAN_CLIENT", "LISTED_CLIENT", "Session", "clean_session", "check_handoff_greeting",
           "BalancedSession", "balanced_session", "DEEP_TESTS_ON",
           "HostileTargets", "deep_settings", "deep_greeting", "deep_client",
           "deep_clients", "SMUGGLING_VECTORS", "smuggling_payload", "greet_and_quit", "expect_pass_new",
           "expect_pass_old", "cache_cli", "refused_too_many_from", "pregreet_dropped", "refused_as_banned"]


CLEAN_CLIENT = "127.0.0.7"


LISTED_CLIENT = "127.0.0.2"


class Session:
    """What clean_session saw: the client, its source port, the marker, the timings."""

    def __init__(self, client, port, marker, first_line, greeting, t_first, t_final, ehlo):
        self.client, self.port, self.marker = client, port, marker
        self.first_line, self.greeting, self.t_first, self.t_final = first_line, greeting, t_first, t_final
        self.ehlo = ehlo


def clean_session(screen, postfix, source=CLEAN_CLIENT, host="127.0.0.1", port=None,
                  expect="new", tag="clean"):
    """One clean client through smtpscreen, checked end to end against docs/design.md, "The life of a connection":
    the first banner line `220-` at once; the final `220 ` line is the backend's greeting
    (`backend.test ESMTP`), after greet.wait for a new client (expect="new"), at once
    for a cached one (expect="old", PASS OLD), a DNSWL-allowlisted one
    (expect="allowlisted", PASS NEW) or one the access list permits (expect="permit",
    ALLOWLISTED); EHLO does not offer XCLIENT/XFORWARD; the message is
    accepted and arrives in the Maildir; smtpscreen logs CONNECT, PASS NEW/OLD and
    DISCONNECT for this client address and port; Postfix logs the real address and port."""
    gw = duration_seconds(screen.settings.get("greet.wait", "6s"))
    marker = unique_marker(tag)
    c = SmtpClient(port or screen.port, host=host, source=source, timeout=gw + 15)
    cport = c.local_port
    greeting = c.read_greeting(timeout=gw + 10)
    check_handoff_greeting(greeting, gw, expect)
    first, t_first, t_final = greeting.lines[0], greeting.t_first, greeting.t_final
    ehlo = c.ehlo()
    for word in ("XCLIENT", "XFORWARD"):
        check(word not in ehlo.text.upper(), f"EHLO reply through smtpscreen offers {word}: {ehlo.text!r}")
    c.send_mail(marker, ehlo=False)
    c.check_closed(10, "after QUIT")
    c.close()
    screen.wait_for_log(re_connect(source, cport))
    if expect == "permit":
        screen.wait_for_log(rf"ALLOWLISTED {ip_port(source, cport)}")
    else:
        screen.wait_for_log((re_pass_old if expect == "old" else re_pass_new)(source, cport))
    screen.wait_for_log(re_disconnect(source, cport), timeout=10)
    postfix.wait_for_delivery(marker)
    postfix.wait_for_log(postfix_client_regex(source, cport))
    log(f"clean client [{source}]:{cport}: PASS {expect.upper()}, delivered {marker}")
    return Session(c, cport, marker, first, greeting, t_first, t_final, ehlo)


def check_handoff_greeting(greeting, gw, expect, who="client"):
    """The greeting of a client smtpscreen hands off (docs/design.md, "The life of a
    connection"): the final line is the backend's `220 backend.test ESMTP`; a new client
    (expect="new") gets `220-` at once and that final line once greet.wait (gw seconds)
    is over, a cached or allowlisted one the final line at once."""
    first, t_first, t_final = greeting.lines[0], greeting.t_first, greeting.t_final
    check(first.startswith(("220 ", "220-")), f"{who}: first banner line from smtpscreen: expected '220-...', got {first!r}")
    check(greeting.code == 220, f"{who}: greeting: expected 220, got {greeting.text!r}")
    check(re.match(r"220 backend\.test ESMTP", greeting.final),
          f"{who}: the final 220 line must be the backend's greeting '220 backend.test ESMTP', got {greeting.final!r}")
    if expect == "new":
        check(first.startswith("220-"), f"{who}: a new client must get the '220-' first banner line, got {first!r}")
        check(t_first < 1.0, f"{who}: the '220-' banner line took {t_first:.2f}s (must come at once)")
        check(t_final >= gw - 0.15, f"{who}: the final 220 came after {t_final:.2f}s, before greet.wait ({gw}s) ended")
    else:
        check(t_final < min(1.0, gw * 0.6),
              f"{who}: a cached (PASS OLD) client got the final 220 after {t_final:.2f}s; it must be handed off at once")


class BalancedSession:
    """What balanced_session saw: the instance that served the client, the client's
    address and port as smtpscreen and the backend logged them, the marker, the greeting."""

    def __init__(self, screen, source, port, marker, greeting):
        self.screen, self.source, self.port, self.marker, self.greeting = screen, source, port, marker, greeting


def balanced_session(screens, postfix, source, balancer_port=None, via=None, expect="new", tag="lb"):
    """One clean client end to end through a load balancer in front of screens (the
    smtpscreen instances behind it, listen.proxy_protocol = v2): to HAProxy on
    balancer_port from source, or, with via=<one of screens>, straight to that instance
    from 127.0.0.1 with the PROXY v2 header a balancer would send for source (the test
    plays the balancer, and picks the instance). Checks the greeting (new: the greet
    wait; old: handed off at once), the delivery, smtpscreen's CONNECT (to the
    balancer's frontend), PASS NEW/OLD and one DISCONNECT on exactly one instance,
    and Postfix's line with the client's own address and port. Returns a BalancedSession."""
    gw = duration_seconds(screens[0].settings.get("greet.wait", "6s"))
    marker = unique_marker(tag)
    if via is None:
        c = SmtpClient(balancer_port, source=source, timeout=gw + 15)
        cport, frontend = c.local_port, ("127.0.0.1", balancer_port)
    else:
        # A port no real connection from source uses: the header names it, smtpscreen logs it.
        cport, frontend = 40000 + (int(time.time() * 1000) % 20000), ("127.0.0.1", balancer_port or via.port)
        c = SmtpClient(via.port, source="127.0.0.1", timeout=gw + 15)
        c.send(proxy_v2_header(source, cport, frontend[0], frontend[1]))
    who = f"[{source}]:{cport}" + (f" via {via.name}" if via else " through the balancer")
    greeting = c.read_greeting(timeout=gw + 10)
    check_handoff_greeting(greeting, gw, expect, who)
    c.send_mail(marker)
    c.check_closed(10, f"{who} after QUIT")
    c.close()
    connect = re_connect(source, cport, to=frontend)
    served = wait_until(lambda: [s for s in screens if re.search(connect, s.log_text(), re.M)], 5,
                        what=f"a CONNECT line for {who} to the balancer's frontend")
    check(len(served) == 1, f"{who} logged by {[s.name for s in served]}, expected one instance")
    screen = served[0]
    check(via is None or screen is via, f"{who} was logged by {screen.name}")
    screen.wait_for_log((re_pass_old if expect == "old" else re_pass_new)(source, cport))
    check_one_disconnect(screen, source, cport)
    postfix.wait_for_delivery(marker)
    postfix.wait_for_log(postfix_client_regex(source, cport))
    log(f"{who}: served by {screen.name}, PASS {expect.upper()}, delivered {marker}")
    return BalancedSession(screen, source, cport, marker, greeting)


DEEP_TESTS_ON = {"deep.pipelining": "on", "deep.non_smtp_command": "on", "deep.bare_newline": "on"}


class HostileTargets:
    """What the hostile-input tests attack: a smtpscreen with the greet wait and enforce,
    and one with the deep tests too, both in front of one scripted backend. Record what
    each attack got in .answers; finish() checks that both survived with their RSS grown
    by less than 30 MiB (also_check(screen) runs on each first), logs the answers and
    stops them."""

    def __init__(self, env):
        bound_asan_quarantine()
        self.backend = scripted_backend(env, "smtp")
        settings = {"backend.address": f"127.0.0.1:{self.backend.port}", "greet.wait": "1s",
                    "greet.action": "enforce", "cache.backend": "memory", "cache.path": None}
        self.screen = env.smtpscreen(settings=dict(settings))
        self.deep = env.smtpscreen(name="deep", settings=deep_settings(dict(settings)))
        self.rss0 = {s.name: rss_mib(s.pid) for s in (self.screen, self.deep)}
        self.answers = {}

    def finish(self, also_check=None):
        for s in (self.screen, self.deep):
            check(s.running(), f"{s.name} died")
            if also_check:
                also_check(s)
            growth = rss_mib(s.pid) - self.rss0[s.name]
            check(growth < 30, f"{s.name}: RSS grew by {growth:.1f} MiB")
        for k, v in self.answers.items():
            log(f"{k}: {v}")
        self.screen.stop()
        self.deep.stop()


def deep_settings(extra=None):
    """smtpscreen settings with every deep protocol test on, plus extra."""
    s = dict(DEEP_TESTS_ON)
    s.update(extra or {})
    return s


def deep_greeting(client, screen):
    """Reads the greeting of a session in which smtpscreen runs the deep tests itself
    (docs/design.md, step 6): the '220-' line at once, then, when greet.wait is over, the final
    '220 <greet.banner>' line -- smtpscreen's own, never the backend's. Returns the Reply."""
    gw = duration_seconds(screen.settings.get("greet.wait", "6s"))
    greeting = client.read_greeting(timeout=gw + 10)
    first, t_first, t_final = greeting.lines[0], greeting.t_first, greeting.t_final
    check(first.startswith("220-"), f"deep-tested client: first banner line must be '220-...', got {first!r}")
    check(t_first < 1.0, f"the '220-' banner line took {t_first:.2f}s (must come at once)")
    banner = screen.settings.get("greet.banner", "")
    check(greeting.code == 220 and greeting.final == f"220 {banner}",
          f"deep-tested client: the final greeting line must be smtpscreen's own '220 {banner}', "
          f"got {greeting.text!r}")
    check(t_final >= gw - 0.15, f"the final 220 came after {t_final:.2f}s, before greet.wait ({gw}s) ended")
    return greeting


def deep_client(screen, source, timeout=15):
    """A SmtpClient from source that has read smtpscreen's deep-test greeting."""
    c = SmtpClient(screen.port, source=source, timeout=timeout)
    deep_greeting(c, screen)
    return c


def deep_clients(screen, sources, timeout=15):
    """Like deep_client for several source addresses at once: all connect together, so
    their greet waits overlap (one greet.wait for the lot). Returns the SmtpClients, each
    past smtpscreen's own final 220."""
    gw = duration_seconds(screen.settings.get("greet.wait", "6s"))
    banner = screen.settings.get("greet.banner", "")
    clients = [SmtpClient(screen.port, source=s, timeout=timeout) for s in sources]
    for c in clients:
        first = c.read_line(timeout=gw + 5)
        check(first.startswith("220-") and c.elapsed() < 1.0,
              f"deep-tested client [{c.source}]: '220-...' must come at once, got {first!r} after {c.elapsed():.2f}s")
    for c in clients:
        rest = c.read_reply(timeout=gw + 10)
        check(rest.code == 220 and rest.final == f"220 {banner}",
              f"deep-tested client [{c.source}]: the final greeting line must be smtpscreen's own "
              f"'220 {banner}', got {rest.text!r}")
        check(c.elapsed() >= gw - 0.15, f"[{c.source}]: final 220 before greet.wait ({gw}s) ended")
    return clients


# The published 2023 SMTP smuggling end-of-data variants (SEC Consult): each stands
# where a receiver that is lax about line ends may see "<CR><LF>.<CR><LF>".
SMUGGLING_VECTORS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF.LF": b"\r\n.\n",
}


def smuggling_payload(vector, marker, smuggled_marker, rcpt="user@example.test",
                      smuggled_from="smuggler@example.org"):
    """The DATA text of a smuggling attempt, up to and including the client's real end
    of data: a message with Subject marker, then the vector, then a whole second SMTP
    transaction (MAIL/RCPT/DATA and a message with Subject smuggled_marker), then the
    client's real end of data <CR><LF>.<CR><LF>, which also ends the smuggled message
    for a receiver that takes the vector for an end of data: that receiver queues two
    messages; one that does not queues one message that holds the second transaction
    as body text."""
    first = (f"From: <sender@example.org>\r\nTo: <{rcpt}>\r\nSubject: {marker}\r\n"
             f"Message-ID: <{marker}@example.org>\r\n\r\nbody of {marker}").encode()
    second = (f"MAIL FROM:<{smuggled_from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
              f"From: <{smuggled_from}>\r\nTo: <{rcpt}>\r\nSubject: {smuggled_marker}\r\n"
              f"Message-ID: <{smuggled_marker}@example.org>\r\n\r\nbody of {smuggled_marker}").encode()
    return first + vector + second + b"\r\n.\r\n"


def greet_and_quit(screen, ip):
    """One session from ip through to the backend's 220, then QUIT; returns (the first
    line the client read, its source port) once smtpscreen has logged the DISCONNECT."""
    c = SmtpClient(screen.port, source=ip)
    first = c.read_line(timeout=10)
    port = c.local_port
    reply = c.read_reply(timeout=10) if first.startswith("220-") else None
    check(first.startswith("220") and (reply is None or reply.code == 220),
          f"{ip}: expected a 220 greeting, got {first!r} {reply!r}")
    c.expect("QUIT", 221)
    c.close()
    screen.wait_for_log(re_disconnect(ip, port))
    return first, port


def expect_pass_new(screen, ip, what):
    """ip is not in the cache: the greet wait's '220-' line first, then PASS NEW (the
    harness's banner, screen.test)."""
    first, port = greet_and_quit(screen, ip)
    check(first == "220-screen.test ESMTP", f"{what}: {ip} must get the greet wait's '220-' line, got {first!r}")
    screen.wait_for_log(re_pass_new(ip, port))


def expect_pass_old(screen, ip, what):
    """ip is in the cache: PASS OLD, and no greet wait."""
    first, port = greet_and_quit(screen, ip)
    screen.wait_for_log(re_pass_old(ip, port))
    check(not first.startswith("220-screen.test"), f"{what}: {ip} is cached and must not wait, got {first!r}")


def cache_cli(screen, *args, rc=0):
    """`smtpscreen -c CONFIG cache ARGS...`, which must exit rc."""
    r = screen.run_cli("-c", screen.config_path, "cache", *args)
    check(r.returncode == rc, f"cache {' '.join(args)}: exit {r.returncode} (expected {rc})\n"
                              f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def refused_too_many_from(screen, source, what="a connection over a limit"):
    """A connection from source that must be refused as a rate limit refuses: the
    `421 4.7.0 ... too many connections from <source>` is the whole answer, at once, then
    the close. Returns its port."""
    c = SmtpClient(screen.port, source=source, timeout=5)
    port = c.local_port
    reply = c.read_reply(timeout=3)
    t = c.elapsed()
    who = f"{screen.name} [{source}]:{port}"
    check(re.fullmatch(rf"421 4\.7\.0 \S+ Error: too many connections from {re.escape(source)}", reply.final),
          f"{who}: expected the 421 of {what}, got {reply.text!r}")
    check(len(reply.lines) == 1, f"{who}: the 421 must come alone (no '220-' first): {reply.text!r}")
    check(t < 1.0, f"{who}: the 421 took {t:.2f}s; it must come at once")
    c.check_closed(3, f"{who} after the 421")
    c.close()
    return port


def pregreet_dropped(screen, source):
    """One session from source that talks first, under greet.action = drop: 521 5.5.1 and
    the close, one DISCONNECT ... dropped (a failure toward ban.after)."""
    c = SmtpClient(screen.port, source=source, timeout=10)
    port = c.local_port
    who = f"{screen.name} [{source}]:{port}"
    c.send("EHLO bot.example\r\n")
    reply = c.read_reply(timeout=5)
    check(reply.final.startswith("521 5.5.1 Protocol error"), f"{who}: expected the pregreet drop, got {reply.text!r}")
    c.check_closed(3, f"{who} after the pregreet drop")
    c.close()
    check_one_disconnect(screen, source, port, outcome="dropped", settle=0)


def refused_as_banned(screen, source):
    """A connection of a banned client (ban.action = drop): `521 5.7.1 Service
    unavailable` is its only line, at once, then the close, one DISCONNECT ... banned."""
    c = SmtpClient(screen.port, source=source, timeout=10)
    port = c.local_port
    who = f"{screen.name} [{source}]:{port}"
    reply = c.read_reply(timeout=3)
    t = c.elapsed()
    check(reply.text == "521 5.7.1 Service unavailable",
          f"{who}: a banned client must get '521 5.7.1 Service unavailable' alone, got {reply.text!r}")
    check(t < 0.8, f"{who}: the 521 took {t:.2f}s; a banned client must get it at once")
    c.check_closed(3, f"{who} after the ban's 521")
    c.close()
    check_one_disconnect(screen, source, port, outcome="banned", settle=0)
