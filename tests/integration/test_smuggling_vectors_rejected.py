#!/usr/bin/env python3
"""SMTP smuggling (docs/design.md, "Hostile input"): the end-of-data variants published in 2023 (<LF>.<LF>,
<LF>.<CR><LF>, <CR>.<CR><LF>, <CR><LF>.<CR>, <CR><LF>.<LF>), each followed by a whole
smuggled MAIL/RCPT/DATA transaction and then the client's real <CR><LF>.<CR><LF>, never
make Postfix accept a second message through smtpscreen.

The backend Postfix runs with smtpd_forbid_bare_newline = no, the setting under which
it reads <LF>.<LF> as an end of data; a control sends two vectors straight to it and
two messages are queued each time -- so in the rest of the test it is smtpscreen that
stops the smuggling, not Postfix.

  - smuggling.bare_lf = reject (the default), for every vector, in a client's first
    (deep-tested, PASS NEW) session, in a PASS OLD session and (two vectors) from a
    client the access list permits (ALLOWLISTED): the client's real end of
    data is answered '550 5.5.2 Message contains bare <LF>' (<CR> for the bare-CR
    vectors), then 421 and close; smtpscreen logs the refusal and DISCONNECT ...
    bad-message; Postfix loses the connection mid-DATA and queues NEITHER message.
  - smuggling.bare_lf = normalize, for every vector: one '250 ... queued' answer and
    exactly one message arrives, holding the would-be smuggled transaction as body text;
    never two."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

# Which bare octet smtpscreen meets first in each vector.
BARE = {"LF.LF": "LF", "LF.CRLF": "LF", "CR.CRLF": "CR", "CRLF.CR": "CR", "CRLF.LF": "LF"}


def open_transaction(c, tag):
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")   # Postfix's answer: handed off
    c.expect("DATA", 354)


def smuggle_rejected(screen, pf, c, name, path):
    """One attempt through the reject screen; c has read its greeting."""
    src, port = c.source, c.local_port
    tag = f"{name}/{path}"
    marker = harness.unique_marker(f"{name.replace('.', '')}-{path}-first")
    smuggled = harness.unique_marker(f"{name.replace('.', '')}-{path}-smuggled")
    queued_before = len(harness.postfix_queued_ids(pf))
    open_transaction(c, tag)
    c.send(harness.smuggling_payload(harness.SMUGGLING_VECTORS[name], marker, smuggled))
    reply = c.read_reply()
    want = r"^550 5\.5\.2 Message contains bare <LF>" if BARE[name] == "LF" else \
        r"^550 5\.5\.2 Message contains bare <(CR|LF)>"
    check(re.search(want, reply.final),
          f"{tag}: the client's real end of data must get /{want}/, got {reply.text!r}; {c.transcript_text()}")
    check(len(reply.lines) == 1, f"{tag}: one reply line expected, got {reply.lines!r}")
    c.check_closed(5, f"{tag}: after the 550")
    rest = c.buf.decode(errors="replace")
    check(re.fullmatch(r"(421 [^\r\n]*\r\n)?", rest),
          f"{tag}: after the 550 only a 421 may come before the close, got {rest!r}")
    check("250" not in rest and "354" not in rest, f"{tag}: the smuggled transaction was answered: {rest!r}")
    screen.wait_for_log(rf"NOQUEUE: reject: DATA from {harness.ip_port(src, port)}: 550 5\.5\.2 ")
    screen.wait_for_log(rf"DISCONNECT {harness.ip_port(src, port)} bad-message")
    # Postfix sees the connection end in the middle of DATA and queues nothing.
    pf.wait_for_log(rf"lost connection after DATA[^\n]* from unknown\[{re.escape(src)}\]:{port}")
    time.sleep(0.3)
    queued = harness.postfix_queued_ids(pf)
    check(len(queued) == queued_before,
          f"{tag}: Postfix queued {len(queued) - queued_before} message(s) for a refused smuggling attempt")
    return marker, smuggled


def main(env):
    pf = env.postfix(bare_newline="no")
    dns = env.rbldnsd()
    access = os.path.join(env.dir, "access.cidr")
    with open(access, "w") as f:
        f.write("127.0.0.79 permit\n")
    reject = env.smtpscreen(postfix=pf, dns=dns, name="reject", settings=harness.deep_settings({
        "smuggling.bare_lf": "reject", "greet.wait": "1s", "access.file": access}))
    normalize = env.smtpscreen(postfix=pf, dns=dns, name="normalize", settings=harness.deep_settings({
        "smuggling.bare_lf": "normalize", "greet.wait": "1s"}))
    names = list(harness.SMUGGLING_VECTORS)

    # --- control: straight to this Postfix, the LF vectors smuggle a second message
    for name in ("LF.LF", "LF.CRLF"):
        marker = harness.unique_marker(f"control-{name.replace('.', '')}")
        smuggled = marker + "-smuggled"
        c = harness.SmtpClient(pf.plain_port, source="127.0.0.1")
        c.expect(None, 220, r"backend\.test")
        open_transaction(c, "control")
        c.send(harness.smuggling_payload(harness.SMUGGLING_VECTORS[name], marker, smuggled))
        got = c.drain(quiet=1.0, limit=5).decode(errors="replace")
        check(len(re.findall(r"^250 2\.0\.0 Ok: queued as", got, re.M)) == 2,
              f"control {name}: Postfix with smtpd_forbid_bare_newline = no must queue two messages "
              f"(else this test proves nothing), replies: {got!r}")
        pf.wait_for_delivery(marker)
        pf.wait_for_delivery(smuggled)
        c.close()
    harness.log("control: Postfix alone accepts the smuggled second message")
    expected_queued = len(harness.postfix_queued_ids(pf))

    # --- reject, first session (deep tests, PASS NEW), then PASS OLD, for every vector
    sources = {name: f"127.0.0.{70 + i}" for i, name in enumerate(names)}
    markers = []
    clients = harness.deep_clients(reject, [sources[n] for n in names])
    for name, c in zip(names, clients):
        markers += smuggle_rejected(reject, pf, c, name, "new")
        reject.wait_for_log(harness.re_pass_new(sources[name], c.local_port))
    for name in names:
        c = harness.SmtpClient(reject.port, source=sources[name])
        c.expect(None, 220, r"^220 backend\.test ESMTP")      # PASS OLD: handed off at once
        markers += smuggle_rejected(reject, pf, c, name, "old")
        reject.wait_for_log(harness.re_pass_old(sources[name], c.local_port))
    # An access-list 'permit' hands off at once too: the filter is on that path as well.
    for name in ("LF.LF", "CRLF.CR"):
        c = harness.SmtpClient(reject.port, source="127.0.0.79")
        c.expect(None, 220, r"^220 backend\.test ESMTP")
        markers += smuggle_rejected(reject, pf, c, name, "allowlisted")
        reject.wait_for_log(rf"ALLOWLISTED {harness.ip_port('127.0.0.79', c.local_port)}")
    time.sleep(1.0)
    for m in markers:
        check(not pf.delivered(m), f"reject: {m} arrived")
    check(len(harness.postfix_queued_ids(pf)) == expected_queued,
          "reject: Postfix queued a message from a smuggling attempt")
    harness.log("reject: neither message of any vector was queued")

    # --- normalize: exactly one message, the smuggled text inside it
    sources = {name: f"127.0.0.{80 + i}" for i, name in enumerate(names)}
    clients = harness.deep_clients(normalize, [sources[n] for n in names])
    for name, c in zip(names, clients):
        tag = f"normalize {name}"
        marker = harness.unique_marker(f"norm-{name.replace('.', '')}")
        smuggled = harness.unique_marker(f"norm-{name.replace('.', '')}-smuggled")
        open_transaction(c, tag)
        c.send(harness.smuggling_payload(harness.SMUGGLING_VECTORS[name], marker, smuggled))
        c.expect(None, 250, r"queued as")
        c.send("QUIT\r\n")
        got = c.drain(quiet=0.5, limit=5).decode(errors="replace")
        check(got.startswith("221"), f"{tag}: after the one 250 only QUIT's 221 may come, got {got!r}")
        expected_queued += 1
        text = pf.wait_for_delivery(marker)
        time.sleep(0.3)
        both = pf.delivered(smuggled)
        check(len(both) == 1 and marker in both[0],
              f"{tag}: the smuggled part must arrive only inside the first message, found in "
              f"{len(both)} message(s)")
        check(len(pf.delivered(marker)) == 1, f"{tag}: the message arrived more than once")
        harness.check_search(rf"^Subject: {smuggled}$", text.split("\n\n", 1)[1] if "\n\n" in text else "",
                             f"{tag}: the smuggled header as body text")
        check(re.search(rf"^Subject: {marker}$", text, re.M), f"{tag}: the first message's own Subject")
        check(not re.search(rf"^Subject: {smuggled}$", text.split("\n\n", 1)[0], re.M),
              f"{tag}: the smuggled Subject is in the message's header")
        check(len(harness.postfix_queued_ids(pf)) == expected_queued,
              f"{tag}: Postfix queued {len(harness.postfix_queued_ids(pf)) - expected_queued + 1} messages, "
              f"expected exactly one")
    normalize.check_no_log(r"NOQUEUE: reject: DATA")
    harness.log("normalize: exactly one message per vector")
    reject.stop()
    normalize.stop()


harness.run(main)
