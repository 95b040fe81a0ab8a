"""DNS for the tests: a small query client, rbldnsd serving test zones, and a scripted
UDP server that answers each zone in its own faulty way."""

import os
import socket
import struct
import subprocess
import threading
import time

from .checks import Failure, log, wait_until
from .ports import free_udp_tcp_port
from .processes import read_text, terminate, user_exists, which

__all__ = ["DEFAULT_ZONES", "dns_query", "reverse_name", "Rbldnsd", "ScriptedDns",
           "scripted_dns"]


# The test DNS zones served by rbldnsd (ip4set data). Addresses are chosen so that each
# test can bind a client to an address with a known listing:
#   127.0.0.2, .10   listed in bl.test (answers 127.0.0.2 and 127.0.0.10)
#   127.0.0.20       listed in wl.test only (answer 127.0.0.3)
#   127.0.0.21       listed in both bl.test (127.0.0.2) and wl.test (127.0.0.3)
#   127.0.0.30       listed in bl.test (for "access permit beats DNSBL")
#   127.0.0.2 also in bl2.test (answer 127.0.0.4), to test "the highest-weighted zone"
#   127.0.0.7, .8, .9 and anything else: listed nowhere (clean clients)
DEFAULT_ZONES = {
    "bl.test": [
        ":127.0.0.2:Listed in bl.test",
        "127.0.0.2",
        "127.0.0.10 :127.0.0.10:Listed as ten",
        "127.0.0.21",
        "127.0.0.30",
    ],
    "bl2.test": [
        ":127.0.0.4:Listed in bl2.test",
        "127.0.0.2",
    ],
    "wl.test": [
        ":127.0.0.3:Allowlisted in wl.test",
        "127.0.0.20",
        "127.0.0.21",
    ],
}


def dns_query(name, server="127.0.0.1", port=53, qtype=1, timeout=1.0):
    """(rcode, [A records]) for name, asked over UDP."""
    qid = os.getpid() & 0xFFFF
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        data, _ = s.recvfrom(4096)
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", data[:12])
    rcode = flags & 0xF
    pos = 12

    def skip_name(p):
        while True:
            n = data[p]
            if n == 0:
                return p + 1
            if n & 0xC0 == 0xC0:
                return p + 2
            p += n + 1

    for _ in range(qd):
        pos = skip_name(pos) + 4
    answers = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return rcode, answers


def reverse_name(ip, zone):
    return ".".join(reversed(ip.split("."))) + "." + zone


class Rbldnsd:
    """rbldnsd on host:port (UDP; 127.0.0.1 and a free port unless given) serving zones
    {name: [ip4set lines]} with answers that live ttl seconds; a zone given as (dataset,
    [lines]) uses that rbldnsd dataset instead, e.g. ("generic", ['@ TXT "v=spf1 -all"'])
    for TXT records. env: anything with a directory (.dir) and add_cleanup(fn), an Env or
    the bench's. preexec_fn: run in the child before exec (the bench pins it to a CPU)."""

    def __init__(self, env, zones=None, name="rbldnsd", host="127.0.0.1", port=None, ttl=60,
                 preexec_fn=None):
        self.env = env
        self.dir = os.path.join(env.dir, name)
        self.zones = zones if zones is not None else DEFAULT_ZONES
        self.host, self.ttl, self.preexec_fn = host, ttl, preexec_fn
        self.port = port or free_udp_tcp_port(host)
        self.proc = None
        self.log_path = os.path.join(self.dir, "rbldnsd.log")
        self.exe = which("rbldnsd")

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        specs = []
        for zone, lines in self.zones.items():
            dataset = "ip4set"
            if isinstance(lines, tuple):
                dataset, lines = lines
            fname = zone.replace(".", "_") + ".zone"
            with open(os.path.join(self.dir, fname), "w") as f:
                f.write("\n".join(lines) + "\n")
            os.chmod(os.path.join(self.dir, fname), 0o644)
            specs.append(f"{zone}:{dataset}:{fname}")
        cmd = [self.exe, "-n", "-b", f"{self.host}/{self.port}", "-w", self.dir, "-t", str(self.ttl),
               "-c", "1h"]
        if os.geteuid() == 0:
            cmd += ["-u", "rbldns" if user_exists("rbldns") else "nobody"]
        cmd += specs
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=self.preexec_fn)
        logf.close()
        self.env.add_cleanup(self.stop)
        probe_zone = next(iter(self.zones))

        def answers():
            if self.proc.poll() is not None:
                raise Failure(f"rbldnsd exited with {self.proc.returncode}: {read_text(self.log_path)}")
            try:
                dns_query(reverse_name("127.0.0.254", probe_zone), server=self.host, port=self.port,
                          timeout=0.2)
                return True
            except OSError:
                return False

        wait_until(answers, 10, what=f"rbldnsd answering on {self.host}:{self.port}")
        log(f"rbldnsd pid {self.proc.pid} on {self.host}:{self.port}, zones {', '.join(self.zones)}")
        return self

    def lookup(self, ip, zone):
        return dns_query(reverse_name(ip, zone), server=self.host, port=self.port)

    def stop(self):
        terminate(self.proc)


def _dns_parse_query(packet):
    """(id, flags, qname, qtype, end of the question) of a DNS query, or None."""
    if len(packet) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", packet[:6])
    if qd < 1:
        return None
    pos, labels = 12, []
    while pos < len(packet):
        n = packet[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(packet):
            return None
        labels.append(packet[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    if pos + 4 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[pos:pos + 2])[0]
    return qid, flags, ".".join(labels).lower(), qtype, pos + 4


class ScriptedDns:
    """A DNS server on 127.0.0.1:port (UDP only; nothing listens on the TCP port) in a
    thread, answering each query by the zone its name is under: zones {zone: mode}.
    Modes:
      listed        A 127.0.0.2, TTL 60
      nxdomain      NXDOMAIN              nodata     NOERROR, no answer
      servfail      SERVFAIL              refused    REFUSED
      silent        never answers
      truncated     TC bit set, no answer (a resolver retries over TCP: refused here)
      garbage       the query's id, then random bytes
      garbage-answer  header and question intact, random bytes after them
      bad-rdlength  an A record whose RDLENGTH runs past the end of the packet
      short         a 5-byte datagram
      wrong-id      a correct 'listed' answer with another query id (must be ignored)
      slow:SECONDS  'listed', but only after SECONDS
    Names under no zone get NXDOMAIN. .queries is [(monotonic time, name, qtype)]."""

    def __init__(self, zones, port=None):
        self.zones = {z.lower().rstrip("."): m for z, m in zones.items()}
        self.port = port or free_udp_tcp_port()
        self.queries = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.timers = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def mode_for(self, name):
        for zone, mode in self.zones.items():
            if name == zone or name.endswith("." + zone):
                return mode
        return "nxdomain"

    def queries_for(self, zone):
        with self.lock:
            return [q for q in self.queries if q[1] == zone or q[1].endswith("." + zone)]

    def _serve(self):
        while not self.stopping.is_set():
            try:
                packet, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            q = _dns_parse_query(packet)
            if q is None:
                continue
            qid, _, name, qtype, qend = q
            with self.lock:
                self.queries.append((time.monotonic(), name, qtype))
            reply = self._reply(packet, qid, name, qtype, qend)
            if reply is None:
                continue
            delay, data = reply
            if delay:
                t = threading.Timer(delay, self._send, (data, peer))
                t.daemon = True
                self.timers.append(t)
                t.start()
            else:
                self._send(data, peer)

    def _send(self, data, peer):
        try:
            self.sock.sendto(data, peer)
        except OSError:
            pass

    @staticmethod
    def _answer(qid, question, rcode=0, answers=(), flags_extra=0, ttl=60):
        flags = 0x8180 | flags_extra | rcode  # QR, RD, RA
        out = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0) + question
        for a in answers:
            out += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(a)
        return out

    def _reply(self, packet, qid, name, qtype, qend):
        mode = self.mode_for(name)
        question = packet[12:qend]
        listed = ["127.0.0.2"] if qtype == 1 else []
        if mode == "silent":
            return None
        if mode == "listed":
            return 0, self._answer(qid, question, answers=listed)
        if mode == "nxdomain":
            return 0, self._answer(qid, question, rcode=3)
        if mode == "nodata":
            return 0, self._answer(qid, question)
        if mode == "servfail":
            return 0, self._answer(qid, question, rcode=2)
        if mode == "refused":
            return 0, self._answer(qid, question, rcode=5)
        if mode == "truncated":
            return 0, self._answer(qid, question, flags_extra=0x0200)
        if mode == "garbage":
            return 0, struct.pack("!H", qid) + os.urandom(61)
        if mode == "garbage-answer":
            head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
            return 0, head + os.urandom(23)
        if mode == "bad-rdlength":
            head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
            return 0, head + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 200) + socket.inet_aton("127.0.0.2")
        if mode == "short":
            return 0, struct.pack("!H", qid) + b"\x81\x80\x00"
        if mode == "wrong-id":
            return 0, self._answer((qid + 1) & 0xFFFF, question, answers=listed)
        if mode.startswith("slow:"):
            return float(mode.split(":", 1)[1]), self._answer(qid, question, answers=listed)
        raise Failure(f"ScriptedDns: unknown mode {mode!r}")

    def stop(self):
        self.stopping.set()
        for t in self.timers:
            t.cancel()
        self.thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass


def scripted_dns(env, zones, port=None):
    d = ScriptedDns(zones, port)
    env.add_cleanup(d.stop)
    log(f"scripted DNS on 127.0.0.1:{d.port}: {d.zones}")
    return d
