#!/usr/bin/env python3
"""The smuggling filter on DATA (docs/design.md, "Hostile input") refuses what it must and nothing else, however
the client's bytes are cut into TCP segments. Postfix runs with
smtpd_forbid_bare_newline = no, so only smtpscreen can refuse anything here.
  - A clean message with client dot-stuffing ('..hidden' for '.hidden', '...two'),
    dots inside lines, an empty line and a 1000-octet text line (998 + CRLF, RFC 5321
    §4.5.3.1.6), sent in small pieces that cut CRLF between CR and LF and the final
    '.' line apart, is accepted (Postfix's 250) and arrives byte-exact in the Maildir.
  - In the same session, a second transaction carrying <LF>.<LF> + a smuggled
    transaction gets '550 5.5.2 Message contains bare <LF>', 421, close; only the first
    message ever arrives.
  - A vector cut across segments ('<CR><LF>.' | '<CR>' | 'MAIL FROM...') is still
    refused (bare <CR>), in a PASS OLD session.
  - A 1001-octet text line gets '550 5.5.2 Message line too long' and nothing is queued.
  - smuggling.bare_lf = normalize: a bare LF inside an ordinary line becomes a line
    break, the message arrives once."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def send_pieces(c, data, cuts):
    """Sends data cut at the given offsets, pausing so that each piece is its own read."""
    last = 0
    for at in sorted(cuts) + [len(data)]:
        if at > last:
            c.send(data[last:at])
            time.sleep(0.03)
            last = at


def open_transaction(c, ehlo=True):
    if ehlo:
        c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<user@example.test>", 250, r"2\.1\.5")
    c.expect("DATA", 354)


def expect_refusal(c, screen, regex, tag):
    reply = c.read_reply()
    check(re.search(regex, reply.final), f"{tag}: expected /{regex}/, got {reply.text!r}; {c.transcript_text()}")
    c.check_closed(5, f"{tag}: after the 550")
    rest = c.buf.decode(errors="replace")
    check(re.fullmatch(r"(421 [^\r\n]*\r\n)?", rest), f"{tag}: after the 550 only a 421 may come, got {rest!r}")
    screen.wait_for_log(rf"DISCONNECT {harness.ip_port(c.source, c.local_port)} bad-message")


def main(env):
    pf = env.postfix(bare_newline="no")
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, name="reject", settings=harness.deep_settings({
        "smuggling.bare_lf": "reject", "greet.wait": "1s"}))
    norm = env.smtpscreen(postfix=pf, dns=dns, name="normalize", settings=harness.deep_settings({
        "smuggling.bare_lf": "normalize", "greet.wait": "1s"}))
    src = "127.0.0.100"

    # --- a clean, awkward message, cut into pieces, first (deep-tested) session
    marker = harness.unique_marker("intact")
    long_line = "L" * 997 + "E"                       # 998 octets + CRLF = 1000
    body_lines = ["..hidden", "...two", "a.b.c", ".. leading dot and space", "", long_line, "last line"]
    text = (harness.message_text(marker) + "\r\n".join(body_lines) + "\r\n.\r\n").encode()
    cuts = [i + 1 for i, b in enumerate(text) if b == ord("\r")]   # between every CR and its LF
    cuts += [len(text) - 3, len(text) - 2, len(text) - 1]          # '\r\n' | '.' | '\r' | '\n'
    c, other = harness.deep_clients(screen, [src, "127.0.0.101"])
    port = c.local_port
    open_transaction(c)
    send_pieces(c, text, cuts)
    c.expect(None, 250, r"queued as")
    delivered = pf.wait_for_delivery(marker)
    body = delivered.split("\n\n", 1)[1]
    want = "body of " + marker + "\n" + "\n".join([".hidden", "..two", "a.b.c", ". leading dot and space", "",
                                                    long_line, "last line"]) + "\n"
    check(body == want, f"the message must arrive byte-exact (unstuffed), got body {body[:300]!r}... "
                        f"expected {want[:300]!r}...")
    screen.wait_for_log(harness.re_pass_new(src, port))

    # --- same session: the second message smuggles
    m2 = harness.unique_marker("second")
    smuggled = m2 + "-smuggled"
    queued = len(harness.postfix_queued_ids(pf))
    open_transaction(c, ehlo=False)
    c.send(harness.smuggling_payload(harness.SMUGGLING_VECTORS["LF.LF"], m2, smuggled))
    expect_refusal(c, screen, r"^550 5\.5\.2 Message contains bare <LF>", "second message of a session")
    pf.wait_for_log(rf"lost connection after DATA[^\n]* from unknown\[{re.escape(src)}\]:{port}")
    other.expect("QUIT", 221)

    # --- PASS OLD: a vector cut across segments
    m3 = harness.unique_marker("split-vector")
    c = harness.SmtpClient(screen.port, source=src)
    c.expect(None, 220, r"^220 backend\.test ESMTP")
    open_transaction(c)
    payload = harness.smuggling_payload(harness.SMUGGLING_VECTORS["CRLF.CR"], m3, m3 + "-smuggled")
    at = payload.index(b"\r\n.\rMAIL")
    send_pieces(c, payload, [at, at + 2, at + 3, at + 4])
    expect_refusal(c, screen, r"^550 5\.5\.2 Message contains bare <(CR|LF)>", "vector cut across segments")
    screen.wait_for_log(harness.re_pass_old(src, c.local_port))

    # --- a text line over 1000 octets
    m4 = harness.unique_marker("longline")
    c = harness.SmtpClient(screen.port, source=src)
    c.expect(None, 220, r"^220 backend\.test ESMTP")
    open_transaction(c)
    c.send(harness.message_text(m4) + "X" * 999 + "\r\nend\r\n.\r\n")
    expect_refusal(c, screen, r"^550 5\.5\.2 ", "1001-octet text line")
    time.sleep(1.0)
    for m in (m2, smuggled, m3, m4):
        check(not pf.delivered(m), f"{m} arrived")
    check(len(harness.postfix_queued_ids(pf)) == queued,
          f"Postfix queued {len(harness.postfix_queued_ids(pf)) - queued} message(s) from refused DATA")

    # --- normalize: a bare LF inside an ordinary line is a line break, one message
    m5 = harness.unique_marker("norm-inline")
    c = harness.deep_client(norm, "127.0.0.102")
    open_transaction(c)
    c.send(harness.message_text(m5) + "first half\nsecond half\r\n.line with a dot\n.\n..\r\n.\r\n")
    c.expect(None, 250, r"queued as")
    c.expect("QUIT", 221)
    text = pf.wait_for_delivery(m5)
    body = text.split("\n\n", 1)[1]
    # The client's lines (CRLF-delimited) are "first half<LF>second half" and
    # ".line with a dot<LF>.<LF>.." (its own dot-stuffing); each bare LF becomes a line
    # break, and the dots that follow one are text, never an end of data.
    check(body == f"body of {m5}\nfirst half\nsecond half\nline with a dot\n.\n..\n",
          f"normalize: unexpected body {body!r}")
    time.sleep(0.5)
    check(len(pf.delivered(m5)) == 1, "normalize: the message arrived more than once")
    screen.stop()
    norm.stop()


harness.run(main)
