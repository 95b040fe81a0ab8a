#!/usr/bin/env python3
"""The cache file and its directory are owner-only whatever the umask (docs/design.md, "Hostile input"; the cache
says which addresses connected): started with umask 000 and a cache.path whose directory
does not exist yet, smtpscreen creates the directory 0700 and the file and its lock file
0600, and a client's pass is stored there."""
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def main(env):
    pf = env.postfix()
    directory = os.path.join(env.dir, "state")
    path = os.path.join(directory, "cache.lmdb")
    screen = env.smtpscreen(postfix=pf, start=False, settings={"cache.path": path})
    old = os.umask(0)
    try:
        screen.start()
    finally:
        os.umask(old)
    harness.clean_session(screen, pf, source="127.0.0.7", expect="new")
    for p, want in ((directory, 0o700), (path, 0o600), (path + "-lock", 0o600)):
        check(os.path.exists(p), f"{p} was not created")
        check(mode(p) == want, f"{p} has mode {mode(p):o}, expected {want:o}")
    screen.stop()


harness.run(main)
