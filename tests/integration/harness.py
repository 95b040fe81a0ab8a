"""The integration tests' entry to the test library (tests/lib/smtptest/, one module
per job: see its __init__.py). A test is one file, one scenario, and drives the real
programs on loopback:

    import harness
    from harness import check

    def main(env):
        postfix = env.postfix()                       # private Postfix, never the system one
        dns = env.rbldnsd()                           # bl.test / wl.test on 127.0.0.1:ephemeral
        screen = env.smtpscreen(postfix=postfix, dns=dns, settings={"greet.wait": "1s"})
        c = harness.SmtpClient(screen.port, source="127.0.0.7")
        greeting = c.read_greeting(code=220)
        ...

    harness.run(main)

`run` gives the test a fresh temporary directory, a watchdog, and cleans up every
process it started (by PID, never by name) whatever happens. Exit status: 0 pass,
1 fail (with the reason and the tails of every log), 77 skip (meson's convention) when
the machine cannot run it (not root, Postfix or rbldnsd missing).

Environment: SMTPSCREEN is the binary under test (meson sets it); KEEP_TMP=1 keeps the
temporary directory for a look afterwards.

This module only re-exports the package, plus the old names of helpers that now have
one name each (below), so that tests written against the single-file harness keep
working; new tests use the new names."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

from smtptest import *  # noqa: E402,F401,F403
from smtptest.backends import ScriptedBackend  # noqa: E402
from smtptest.checks import tail  # noqa: E402
from smtptest.env import Env  # noqa: E402
from smtptest.processes import read_text, user_exists  # noqa: E402
from smtptest.tls import openssl  # noqa: E402


# --- Old names, kept for tests written before the package (remove once none uses them).

def read_full_greeting(client, timeout=15):
    """Old name: (greeting, t_first, t_final); now client.read_greeting(timeout)."""
    g = client.read_greeting(timeout)
    return g, g.t_first, g.t_final


def read_greeting_full(client, timeout=15):
    """Old name: now client.read_greeting(timeout, code=220)."""
    return client.read_greeting(timeout, code=220)


def FakeBackend(mode="smtp", **kw):
    """Old name: the scripted backend does its job (modes smtp, refuse-xclient, silent,
    close-at-dot...); now scripted_backend(env, mode). As the old one did, it greets as
    fake.test and offers XCLIENT."""
    return ScriptedBackend(mode, **dict({"greeting": "220 fake.test ESMTP", "offers_xclient": True}, **kw))


def _fake_backend(env, mode="smtp", **kw):
    b = FakeBackend(mode, **kw)
    env.add_cleanup(b.stop)
    return b


Env.fake_backend = _fake_backend
_read, _tail, _openssl, _user_exists = read_text, tail, openssl, user_exists
