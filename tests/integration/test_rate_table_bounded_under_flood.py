#!/usr/bin/env python3
"""limits.rate_table_size bounds the rate limits' memory however many addresses come
(docs/design.md, "Edge defences"; issue 19). smtpscreen counts every client address
(limits.per_client_rate = 1000/10m) and the whole of 127.0.0.0/8 as one network
(limits.network_prefix = 8, 64; limits.per_network_rate = 1/10m), in a table of 500
keys, with two event loops. After one admitted connection, a flood from
RATE_FLOOD_ADDRESSES distinct addresses (100,000 by default), once each: every one gets
the 421 at once and adds a new client address to the table, so the table is full after
500 and from then on forgets one key for each new one. The metrics gauge
smtpscreen_rate_table_keys never reads more than 500 and ends at 500, every refusal is
counted (smtpscreen_rate_limited_total{scope="network"}), the network's RATE LIMIT line
is logged once for the whole flood, and the process's resident memory does not grow
with the number of addresses."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

TABLE = 500
ADDRESSES = int(os.environ.get("RATE_FLOOD_ADDRESSES", "100000"))


def address(i):
    """The i-th flood address: 127.1.0.1 on, never .0 or .255 in the last byte."""
    n = (1 << 16) + (i // 250) * 256 + i % 250 + 1
    return f"127.{n >> 16 & 0xff}.{n >> 8 & 0xff}.{n & 0xff}"


def refused(port, source):
    c = harness.SmtpClient(port, source=source, timeout=5)
    reply = c.read_reply(timeout=5)
    check(reply.final.startswith("421 4.7.0 ") and len(reply.lines) == 1,
          f"[{source}] expected one 421 line, got {reply.text!r}")
    c.check_closed(5, f"[{source}] after the 421")
    check(not c.buf, f"[{source}] sent {c.buf!r} after its 421")
    c.close()


def main(env):
    harness.bound_asan_quarantine(mb=2)   # filled within the first addresses: what grows after is the table
    stats_port = harness.free_port()
    screen = env.smtpscreen(settings={
        "limits.per_client_rate": "1000/10m", "limits.per_network_rate": "1/10m",
        "limits.network_prefix": "8, 64", "limits.rate_table_size": str(TABLE),
        "process.threads": "2", "cache.backend": "memory", "cache.path": None,
        "stats.listen": f"127.0.0.1:{stats_port}"})
    screen.wait_for_log(rf"metrics on http://127\.0\.0\.1:{stats_port}/metrics")

    first = harness.SmtpClient(screen.port, source="127.0.0.50", timeout=10)
    check(first.read_line(timeout=5).startswith("220-"), "the network's first connection must be admitted")
    first.close()

    rss_at = {}
    largest = 0
    t0 = time.monotonic()
    for i in range(ADDRESSES):
        refused(screen.port, address(i))
        if (i + 1) % 2000 == 0 or i + 1 == ADDRESSES:
            keys = harness.scrape_metrics(stats_port)["smtpscreen_rate_table_keys"]
            largest = max(largest, keys)
            check(keys <= TABLE, f"after {i + 1} addresses the table holds {keys:.0f} keys, more than {TABLE}")
            rss_at[i + 1] = harness.rss_mib(screen.pid)
    took = time.monotonic() - t0

    after = harness.scrape_metrics(stats_port)
    check(after["smtpscreen_rate_table_keys"] == TABLE,
          f"the table ends with {after['smtpscreen_rate_table_keys']:.0f} keys, expected it full at {TABLE}")
    counted = after['smtpscreen_rate_limited_total{scope="network"}']
    check(counted == ADDRESSES, f"{counted:.0f} refusals counted for {ADDRESSES}")
    check(after['smtpscreen_sessions_total{outcome="rate-limit"}'] == ADDRESSES,
          "every refused connection must end as rate-limit")
    harness.wait_until(lambda: len(re.findall(r"DISCONNECT \S+ rate-limit", screen.log_text())) == ADDRESSES, 20,
                       what=f"{ADDRESSES} DISCONNECT ... rate-limit lines")
    lines = re.findall(r"RATE LIMIT .*", screen.log_text())
    check(len(lines) == 1 and lines[0].endswith("(limits.per_network_rate, 127.0.0.0/8)"),
          f"one RATE LIMIT line for the network's period, whatever the flood; got {len(lines)}: {lines[:3]}")

    # Resident memory once a fifth of the flood is in (the table long full, and under
    # ASan its 16 MB quarantine of freed blocks full too) and at the end: a table that
    # kept every address would hold four fifths of the flood more, at 80 bytes a key.
    base = max(2000, ADDRESSES // 5 // 2000 * 2000)
    grew = rss_at[ADDRESSES] - rss_at[base]
    check(grew < 4.0, f"RSS grew by {grew:.1f} MiB from {base} to {ADDRESSES} addresses: {rss_at}")
    harness.log(f"{ADDRESSES} addresses in {took:.1f}s ({ADDRESSES / took:.0f}/s): table at most {largest:.0f} "
                f"keys; RSS {rss_at[base]:.1f} MiB after {base} addresses, "
                f"{max(rss_at.values()):.1f} MiB at most, {rss_at[ADDRESSES]:.1f} MiB after {ADDRESSES}")
    screen.stop()


harness.run(main)
