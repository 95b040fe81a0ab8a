#!/usr/bin/env python3
"""What an admin expects without reading the source:
  - `--help` names the signals (SIGHUP, SIGTERM) and the man page.
  - Without -c, the file is /etc/smtpscreen/smtpscreen.ini.
  - At start, one line names the version, the file, the user, the listeners and the
    enabled tests.
  - log.stderr = auto: under systemd, whose journal already gets the syslog lines, stderr
    stays quiet (stderr is the journal when $JOURNAL_STREAM names its device:inode); with
    stderr elsewhere, or with syslog off, the lines go to stderr."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def journal_stream_of(path):
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def start_with_stream(env, name, syslog, stream_path_for_env):
    screen = env.smtpscreen(start=False, name=name, settings={"log.stderr": "auto", "log.syslog": syslog})
    open(screen.log_path, "w").close()
    stream = journal_stream_of(stream_path_for_env or screen.log_path)
    screen.start(extra_env={"JOURNAL_STREAM": stream})
    c = harness.SmtpClient(screen.port, source=harness.CLEAN_CLIENT)
    c.close()
    screen.stop()
    return screen.log_text()


def main(env):
    r = harness.run_smtpscreen(["--help"])
    check(r.returncode == 0, f"--help exit {r.returncode}")
    for word in ("SIGHUP", "SIGTERM", "smtpscreen(8)", "/etc/smtpscreen/smtpscreen.ini"):
        check(word in r.stdout, f"--help does not mention {word}:\n{r.stdout}")

    r = harness.run_smtpscreen(["--check"], cwd=env.dir)
    check("/etc/smtpscreen/smtpscreen.ini" in r.stdout + r.stderr,
          f"--check without -c must check /etc/smtpscreen/smtpscreen.ini:\n{r.stdout}{r.stderr}")

    dns = env.rbldnsd()
    screen = env.smtpscreen(dns=dns, settings={"deep.pipelining": "on", "deep.bare_newline": "on"})
    m = screen.wait_for_log(r"smtpscreen (\S+) started: config (\S+), user (\S+), listening on (.+), tests: (.+)$")
    version = harness.run_smtpscreen(["--version"]).stdout.split()[-1]
    check(m.group(1) == version, f"start-up line version {m.group(1)}, --version says {version}")
    check(m.group(2) == screen.config_path, f"start-up line file {m.group(2)}, expected {screen.config_path}")
    import pwd
    check(m.group(3) == pwd.getpwuid(os.geteuid()).pw_name, f"start-up line user {m.group(3)}")
    check(m.group(4) == f"127.0.0.1:{screen.port}", f"start-up line listeners {m.group(4)}")
    check(m.group(5) == "pregreet (enforce), dnsbl bl.test (enforce), deep pipelining+bare_newline (enforce)",
          f"start-up line tests: {m.group(5)}")
    check(len([l for l in screen.log_lines() if " started: " in l]) == 1, "more than one start-up line")
    screen.stop()

    # stderr is the journal and syslog (which the journal also reads) is on: quiet.
    text = start_with_stream(env, "journal", "on", None)
    check(text.strip() == "", f"log.stderr = auto wrote to the journal's stderr although syslog is on:\n{text}")
    # JOURNAL_STREAM inherited but stderr is elsewhere: stderr logs.
    other = os.path.join(env.dir, "some-other-file")
    open(other, "w").close()
    text = start_with_stream(env, "elsewhere", "on", other)
    check(" started: " in text, f"log.stderr = auto with stderr not the journal must log there:\n{text}")
    # The journal, but syslog off: stderr is the only way in.
    text = start_with_stream(env, "nosyslog", "off", None)
    check(" started: " in text, f"log.stderr = auto with log.syslog = off must log to stderr:\n{text}")


harness.run(main)
