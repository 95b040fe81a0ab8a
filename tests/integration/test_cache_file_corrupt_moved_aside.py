#!/usr/bin/env python3
"""A corrupt or truncated LMDB cache never keeps smtpscreen down (the verdict cache is only
a cache: README, "The cache file"): a cache written by smtpscreen with a few clients is
truncated (its record tree's root page cut off, as a crash of the file system can leave
it), then, in a second run, has garbage written over that page. At each start smtpscreen
logs one warning naming the file, what is wrong and where the file went, moves it aside
to PATH.corrupt-<unix time>, keeps running, and screens the next client normally: the
greet wait, then PASS NEW (the client had passed before, but that record went with the
file) and its mail delivered to Postfix. Before this check LMDB mapped the file as it was:
SIGBUS on the first connection, and again at every restart."""
import glob
import os
import random
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

GREET_WAIT = 2.0
CLIENTS = ("127.0.0.7", "127.0.0.8", "127.0.0.9")


def record_root(data):
    """Page size and the root page of the records, from the newest of LMDB's two meta pages
    (mdb.c: 16-byte page header, then magic, version, address, map size, the free list's
    and the records' MDB_db of 48 bytes each, last page, txnid)."""
    psize = struct.unpack_from("<I", data, 16 + 24)[0]   # kept in the free list's pad field
    metas = []
    for off in (0, psize):
        txnid = struct.unpack_from("<Q", data, off + 16 + 128)[0]
        root = struct.unpack_from("<Q", data, off + 16 + 72 + 40)[0]
        metas.append((txnid, root))
    return psize, max(metas)[1]


def main(env):
    pf = env.postfix()
    dns = env.rbldnsd()
    screen = env.smtpscreen(postfix=pf, dns=dns, settings={"greet.wait": f"{int(GREET_WAIT)}s"})
    path = screen.settings["cache.path"]
    for ip in CLIENTS:
        harness.clean_session(screen, pf, source=ip, expect="new", tag="fill")
    screen.stop()
    with open(path, "rb") as f:
        good = f.read()
    psize, root = record_root(good)
    check(2 <= root < len(good) // psize, f"setup: the records' root page {root} is not in the file")

    garbage = random.Random(14)
    damages = (
        ("truncated", good[:min(len(good) // 2, root * psize)]),
        ("page-damaged", good[:root * psize] + bytes(garbage.randrange(256) for _ in range(psize))
         + good[(root + 1) * psize:]),
    )
    for what, data in damages:
        with open(path, "wb") as f:
            f.write(data)
        before = set(glob.glob(path + ".corrupt-*"))
        since = screen.log_size()
        screen.start()
        m = screen.wait_for_log(rf"cache file {re.escape(path)} is corrupt \((.+)\): moved aside to "
                                rf"({re.escape(path)}\.corrupt-\d+); starting with an empty cache$", since=since)
        harness.log(f"{what}: {m.group(0)}")
        aside = m.group(2)
        check(aside not in before, f"{what}: moved to {aside}, the name of an earlier file")
        with open(aside, "rb") as f:
            check(f.read() == data, f"{what}: {aside} does not hold the damaged file")
        check(os.path.exists(aside + "-lock"), f"{what}: the lock file did not go with it to {aside}-lock")
        check(len(re.findall(r"is corrupt", screen.log_text()[since:])) == 1,
              f"{what}: expected one warning about the file")
        harness.clean_session(screen, pf, source=CLIENTS[0], expect="new", tag=what)
        check(screen.running(), f"{what}: smtpscreen is no longer running")
        screen.stop()


harness.run(main)
