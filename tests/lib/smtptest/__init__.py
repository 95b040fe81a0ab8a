"""smtptest: the library the integration tests (tests/integration/) and the bench
(bench/) share to drive the real programs on loopback (Python 3 standard library only).
One module per job:

    checks          Failure, Skip, check, wait_until, log
    ports           free ports, is something listening
    processes       programs, stopping children by PID, /proc figures
    proxy_protocol  PROXY v1/v2 headers
    dns             dns_query, Rbldnsd, ScriptedDns
    smtp_client     SmtpClient (read_greeting, send_mail...), Reply, open_data, swaks
    backends        ScriptedBackend, SinkProcess
    postfix         a private Postfix (and its TLS variant)
    exim            a private Exim
    redis_server    RedisServer (freeze, kill, restart on its port; keys, command counts)
    haproxy         Haproxy from conf/haproxy.cfg with test ports; its servers' check state
    smtpscreen      the binary under test, its INI and its log
    log_lines       regexes of smtpscreen's log lines, check_one_disconnect
    tls             a test CA, STARTTLS clients, posttls-finger
    env             Env and run(main): one test's directory, cleanup and verdict
    scenarios       clean_session, deep_client, HostileTargets, smuggling payloads
    holders         hold_clients: thousands of idle clients held open, for memory tests
    metrics         http_request, scrape_metrics (the stats.listen endpoint)
    debian_machine  a Debian 12 root with systemd, booted in namespaces of its own

Everything public is importable from the package itself (from smtptest import
SmtpClient); tests/integration/harness.py re-exports it for the tests that
`import harness`."""

from .checks import *  # noqa: F401,F403
from .ports import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .proxy_protocol import *  # noqa: F401,F403
from .dns import *  # noqa: F401,F403
from .smtp_client import *  # noqa: F401,F403
from .backends import *  # noqa: F401,F403
from .postfix import *  # noqa: F401,F403
from .exim import *  # noqa: F401,F403
from .redis_server import *  # noqa: F401,F403
from .haproxy import *  # noqa: F401,F403
from .smtpscreen import *  # noqa: F401,F403
from .log_lines import *  # noqa: F401,F403
from .tls import *  # noqa: F401,F403
from .env import *  # noqa: F401,F403
from .scenarios import *  # noqa: F401,F403
from .holders import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .debian_machine import *  # noqa: F401,F403
