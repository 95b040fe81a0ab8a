#!/usr/bin/env python3
"""A real Exim 4.96 as the sending MTA delivers through smtpscreen to the real Postfix in
clear, exactly once (issue 22). Whenever the EHLO reply offers PIPELINING (the backend's
reply is relayed), Exim writes the end of data ".", a pipelined QUIT, and then
half-closes its socket before it reads the replies ("SMTP(shutdown)>>" in exim -v).
smtpscreen used to end the session at that FIN: Postfix queued the message, Exim never
got the 250, deferred it and delivered it again.
  - Two messages from the same client address: the first contact (PASS NEW after the
    greet wait) and then PASS OLD (handed off at once);
  - each time Exim half-closes after QUIT (the test fails if it does not, since then it
    would not exercise the bug), logs "=>" and "Completed" for the message on its first
    try, with no deferral ("==") or bounce ("**"), and its queue ends empty;
  - Postfix delivers each message exactly once.
Exim runs unpacked from Debian's exim4-daemon-heavy (it conflicts with the postfix
package): harness.exim_binary() downloads and unpacks it when missing."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

CLIENT = "127.0.0.7"


def main(env):
    pf = env.postfix()
    screen = env.smtpscreen(postfix=pf, settings={"greet.wait": "1s"})
    exim = harness.Exim(env, route_to=("127.0.0.1", screen.port), interface=CLIENT)

    markers = []
    for n, pass_line in ((1, harness.re_pass_new), (2, harness.re_pass_old)):
        marker = harness.unique_marker(f"exim{n}")
        markers.append(marker)
        since = screen.log_size()
        out = exim.send(marker)
        dialogue = "\n".join(ln for ln in out.splitlines() if re.match(r"\s*SMTP", ln))
        check(re.search(r"SMTP[+>]> QUIT", out) and "SMTP(shutdown)>>" in out,
              f"message {n}: Exim did not pipeline QUIT and half-close, so this run does not "
              f"exercise the half-close; its SMTP dialogue:\n{dialogue}")
        msgid = exim.message_ids()[-1]
        lines = exim.message_log(msgid)
        text = "\n".join(lines)
        check(any(" => " in ln for ln in lines) and any(ln.endswith(" Completed") for ln in lines),
              f"message {n} ({msgid}): Exim must log '=>' and 'Completed' on the first try; its log:\n{text}"
              f"\nSMTP dialogue:\n{dialogue}")
        check(not any(re.search(r" (==|\*\*) ", ln) for ln in lines),
              f"message {n} ({msgid}) was deferred or bounced:\n{text}\nSMTP dialogue:\n{dialogue}")
        screen.wait_for_log(pass_line(CLIENT), since=since)
        pf.wait_for_delivery(marker)
        harness.log(f"message {n}: {msgid} => Completed; Exim's dialogue ended with "
                    f"{dialogue.splitlines()[-4:]}")

    time.sleep(1.5)   # a second copy would come at once: Postfix's queue runs every second here
    for marker in markers:
        got = len(pf.delivered(marker))
        check(got == 1, f"{marker} must arrive exactly once, arrived {got} times")
    check(exim.queue() == "", f"Exim's queue must be empty, got:\n{exim.queue()}")
    disconnects = [ln for ln in screen.log_lines() if re.search(rf"DISCONNECT \[{re.escape(CLIENT)}\]", ln)]
    check(len(disconnects) == 2 and all(" handoff after " in ln for ln in disconnects),
          f"expected two 'DISCONNECT ... handoff' lines, got {disconnects}")


harness.run(main, timeout=150)
