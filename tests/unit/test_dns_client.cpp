// DnsClient and DnsblCheck against a real rbldnsd on 127.0.0.1 (an ephemeral
// port), and against a UDP socket that never answers. The test starts and stops its
// own rbldnsd by PID; without /usr/sbin/rbldnsd those cases are skipped with a message.
// The verified-name lookups use a small DNS server in a thread of this test instead:
// rbldnsd's generic dataset serves only A, TXT and MX records, no PTR.
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/uv_handle.h"
#include "dnsbl/check.h"
#include "dnsbl/dns_client.h"
#include "fixtures.h"

using namespace smtpscreen;
using namespace smtpscreen::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr const char* kRbldnsd = "/usr/sbin/rbldnsd";

constexpr uint32_t ip(unsigned a, unsigned b, unsigned c, unsigned d) { return a << 24 | b << 16 | c << 8 | d; }

// rbldnsd serving bl.example (two datasets, so one address has two A records) and
// wl.example, from a temporary directory. Killed by its PID in the destructor.
class Rbldnsd {
public:
    Rbldnsd() {
        dir_.write("bl.zone",
              "$SOA 300 ns.bl.example hostmaster.bl.example 1 600 300 86400 120\n"
              "$TTL 900\n"
              "127.0.0.2 :127.0.0.2:listed\n"
              "127.0.0.3 :127.0.0.4:listed in the first set\n"
              "192.0.2.0/24 :127.0.0.2:test network\n");
        dir_.write("bl2.zone", "$TTL 600\n127.0.0.3 :127.0.0.10:listed in the second set\n");
        dir_.write("wl.zone", "$TTL 3600\n127.0.0.2 :127.0.10.2:allowlisted\n");
        // rbldnsd drops root to -u and then writes its query log inside the chroot.
        fs::permissions(dir_.dir(), fs::perms::all);
        for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) start();
    }
    ~Rbldnsd() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
        if (out_fd_ >= 0) ::close(out_fd_);
    }
    Rbldnsd(const Rbldnsd&) = delete;
    Rbldnsd& operator=(const Rbldnsd&) = delete;

    bool running() const { return pid_ > 0; }
    Endpoint endpoint() const { return *Endpoint::parse_ip("127.0.0.1", port_); }
    // Queries rbldnsd has logged for name ("-l" log: one line per query).
    int queries(const std::string& name) const {
        std::ifstream in(dir_.path("queries.log"));
        std::string line;
        int n = 0;
        while (std::getline(in, line)) {
            if (line.find(" " + name + " ") != std::string::npos) ++n;
        }
        return n;
    }

private:
    void start() {
        {
            LoopbackUdp probe;  // a free port, released just before rbldnsd binds it
            port_ = probe.port();
        }
        int out[2];
        REQUIRE(::pipe(out) == 0);
        std::vector<std::string> args{kRbldnsd, "-n", "-b", "127.0.0.1/" + std::to_string(port_), "-c", "0"};
        if (::geteuid() == 0) {
            // rbldnsd refuses to run as root: chroot into the data and drop to nobody.
            args.insert(args.end(), {"-u", "nobody", "-r", dir_.dir().string(), "-w", "/", "-l", "+/queries.log"});
        } else {
            args.insert(args.end(), {"-w", dir_.dir().string(), "-l", "+queries.log"});
        }
        args.insert(args.end(), {"bl.example:ip4set:bl.zone", "bl.example:ip4set:bl2.zone",
                                 "wl.example:ip4set:wl.zone"});
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::dup2(out[1], STDOUT_FILENO);
            ::dup2(out[1], STDERR_FILENO);
            ::close(out[0]);
            ::close(out[1]);
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(kRbldnsd, argv.data());
            ::_exit(127);
        }
        ::close(out[1]);
        out_fd_ = out[0];
        if (wait_for_start()) {
            pid_ = pid;
            return;
        }
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
        ::close(out_fd_);
        out_fd_ = -1;
        MESSAGE("rbldnsd did not start: ", output_);
    }

    // rbldnsd -n prints "... started" once its zones are loaded and it serves.
    bool wait_for_start() {
        const auto end = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < end) {
            pollfd p{out_fd_, POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            char buf[512];
            const ssize_t n = ::read(out_fd_, buf, sizeof buf);
            if (n <= 0) return false;
            output_.append(buf, static_cast<size_t>(n));
            if (output_.find(" started") != std::string::npos) return true;
        }
        return false;
    }

    TempDir dir_{"smtpscreen-rbldnsd"};
    uint16_t port_ = 0;
    pid_t pid_ = -1;
    int out_fd_ = -1;
    std::string output_;
};

// What most cases here start from: a DnsClient asking one server, on a loop of its own,
// with what it logs captured; a case takes it apart into loop, stderr_log, log, resolver.
struct ResolverSetup {
    UvLoop loop;
    StderrCapture stderr_log;
    Logger log{false, "smtpscreen", true};
    DnsClient resolver;

    ResolverSetup(const Endpoint& server, std::chrono::milliseconds timeout)
        : resolver(&loop.loop, {server}, timeout, log) {}
};

struct Received final : DnsblWaiter {
    int calls = 0;
    DnsblReply reply;
    std::chrono::steady_clock::time_point at;

    void dnsbl_reply(DnsblSubscription& which, const DnsblReply& r) override {
        CHECK(!which.pending());
        ++calls;
        reply = r;
        at = std::chrono::steady_clock::now();
    }
};

Endpoint client(const char* text) { return *Endpoint::parse_ip(text); }

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// A DNS server on 127.0.0.1 (an ephemeral port) answering from a table of records, as
// a recursive resolver would: CNAME chains followed within the answer, NXDOMAIN for a
// name with no records, NOERROR without answers for a name with none of the type asked.
// It never answers questions for the names in `drop`, and ignores the first question
// for each name in `drop_once` (c-ares asks again). Runs on its own thread.
class FakeDns {
public:
    struct Record {
        std::string owner;
        uint16_t type;
        std::string data;  // the address for A and AAAA, the target name for PTR and CNAME
    };

    explicit FakeDns(std::vector<Record> records, std::vector<std::string> drop = {},
                     std::vector<std::string> drop_once = {})
        : records_(std::move(records)), drop_(std::move(drop)), drop_once_(std::move(drop_once)) {
        for (auto& r : records_) r.owner = lower(r.owner);
        for (auto& d : drop_) d = lower(d);
        for (auto& d : drop_once_) d = lower(d);
        thread_ = std::thread([this] { serve(); });
    }
    ~FakeDns() {
        stop_ = true;
        thread_.join();
    }
    FakeDns(const FakeDns&) = delete;
    FakeDns& operator=(const FakeDns&) = delete;

    Endpoint endpoint() const { return socket_.endpoint(); }
    // Questions received for (name, type).
    int queries(const std::string& name, uint16_t type) const {
        std::lock_guard lock(mutex_);
        return static_cast<int>(std::count(asked_.begin(), asked_.end(), std::pair(lower(name), type)));
    }
    int queries() const {
        std::lock_guard lock(mutex_);
        return static_cast<int>(asked_.size());
    }

private:
    void serve() {
        while (!stop_) {
            pollfd p{socket_.fd(), POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            char buf[512];
            sockaddr_in from{};
            socklen_t from_len = sizeof from;
            const ssize_t n =
                ::recvfrom(socket_.fd(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
            if (n < HFIXEDSZ) continue;
            const std::string reply = answer(std::string_view(buf, static_cast<size_t>(n)));
            if (!reply.empty()) {
                ::sendto(socket_.fd(), reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), from_len);
            }
        }
    }

    std::string answer(std::string_view query) {
        const auto question = read_question(query);
        if (!question) return {};
        const std::string qname = lower(question->name);
        const uint16_t qtype = question->type;
        {
            std::lock_guard lock(mutex_);
            asked_.emplace_back(qname, qtype);
        }
        if (std::find(drop_.begin(), drop_.end(), qname) != drop_.end()) return {};
        if (auto it = std::find(drop_once_.begin(), drop_once_.end(), qname); it != drop_once_.end()) {
            drop_once_.erase(it);
            return {};
        }

        DnsWire answers;
        unsigned count = 0;
        bool known = false;
        std::string current = qname;
        for (int hop = 0; hop < 8; ++hop) {
            bool found = false;
            const Record* cname = nullptr;
            for (const auto& r : records_) {
                if (r.owner != current) continue;
                known = true;
                if (r.type == qtype) {
                    add_record(answers, r);
                    ++count;
                    found = true;
                } else if (r.type == ns_t_cname) {
                    cname = &r;
                }
            }
            if (found || cname == nullptr) break;
            add_record(answers, *cname);
            ++count;
            current = lower(cname->data);
        }
        DnsWire out;
        out.header(question->id, answer_flags(static_cast<unsigned char>(query[2]), known ? 0 : 3), 1, count);
        out.raw(query.substr(HFIXEDSZ, question->end - HFIXEDSZ));
        return out.bytes + answers.bytes;
    }

    static void add_record(DnsWire& w, const Record& r) {
        DnsWire rdata;
        if (r.type == ns_t_a || r.type == ns_t_aaaa) {
            unsigned char addr[16];
            REQUIRE(::inet_pton(r.type == ns_t_a ? AF_INET : AF_INET6, r.data.c_str(), addr) == 1);
            rdata.raw(std::string_view(reinterpret_cast<char*>(addr), r.type == ns_t_a ? 4 : 16));
        } else {
            rdata.name(r.data);
        }
        w.name(r.owner).record_head(r.type, 300).rdata(rdata.bytes);
    }

    std::vector<Record> records_;
    std::vector<std::string> drop_;
    std::vector<std::string> drop_once_;  // only touched by the server thread
    LoopbackUdp socket_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mutex_;
    std::vector<std::pair<std::string, uint16_t>> asked_;
    std::thread thread_;
};

struct ReceivedName {
    int calls = 0;
    std::string name = "(not called)";
    std::chrono::steady_clock::time_point at;

    DnsClient::NameCallback callback() {
        return [this](const std::string& n) {
            ++calls;
            name = n;
            at = std::chrono::steady_clock::now();
        };
    }
};

constexpr uint16_t kA = ns_t_a;
constexpr uint16_t kAAAA = ns_t_aaaa;
constexpr uint16_t kPtr = ns_t_ptr;
constexpr uint16_t kCname = ns_t_cname;
constexpr const char* kV6Ptr = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";

std::vector<FakeDns::Record> rdns_records() {
    return {
        // Verified, with the name in mixed case and the client among two addresses.
        {"5.0.0.127.in-addr.arpa", kPtr, "Mail.Example.TEST"},
        {"mail.example.test", kA, "127.0.0.9"},
        {"mail.example.test", kA, "127.0.0.5"},
        // The name resolves, but not to the client.
        {"6.0.0.127.in-addr.arpa", kPtr, "other.example.test"},
        {"other.example.test", kA, "127.0.0.99"},
        // The name does not resolve at all.
        {"7.0.0.127.in-addr.arpa", kPtr, "nowhere.example.test"},
        // Two names: the first does not resolve back, the second does.
        {"10.0.0.127.in-addr.arpa", kPtr, "a.example.test"},
        {"10.0.0.127.in-addr.arpa", kPtr, "b.example.test"},
        {"a.example.test", kA, "127.0.0.99"},
        {"b.example.test", kA, "127.0.0.10"},
        // Six names; only the last, beyond the few that are tried, resolves back.
        {"12.0.0.127.in-addr.arpa", kPtr, "n1.example.test"},
        {"12.0.0.127.in-addr.arpa", kPtr, "n2.example.test"},
        {"12.0.0.127.in-addr.arpa", kPtr, "n3.example.test"},
        {"12.0.0.127.in-addr.arpa", kPtr, "n4.example.test"},
        {"12.0.0.127.in-addr.arpa", kPtr, "n5.example.test"},
        {"12.0.0.127.in-addr.arpa", kPtr, "n6.example.test"},
        {"n6.example.test", kA, "127.0.0.12"},
        // Names that are not hostnames, each resolving back all the same.
        {"13.0.0.127.in-addr.arpa", kPtr, "bad_name.example.test"},
        {"13.0.0.127.in-addr.arpa", kPtr, "-dash.example.test"},
        {"13.0.0.127.in-addr.arpa", kPtr, "127.0.0.13"},
        {"bad_name.example.test", kA, "127.0.0.13"},
        {"-dash.example.test", kA, "127.0.0.13"},
        {"127.0.0.13", kA, "127.0.0.13"},
        // An invalid name before a valid one.
        {"14.0.0.127.in-addr.arpa", kPtr, "bad_name.example.test"},
        {"14.0.0.127.in-addr.arpa", kPtr, "good.example.test"},
        {"good.example.test", kA, "127.0.0.14"},
        // RFC 2317 classless delegation: the PTR sits behind a CNAME.
        {"15.0.0.127.in-addr.arpa", kCname, "15.0-25.0.0.127.in-addr.arpa"},
        {"15.0-25.0.0.127.in-addr.arpa", kPtr, "classless.example.test"},
        {"classless.example.test", kA, "127.0.0.15"},
        // The forward question is never answered (see drop below).
        {"16.0.0.127.in-addr.arpa", kPtr, "slow.example.test"},
        {"slow.example.test", kA, "127.0.0.16"},
        // IPv6: verified through AAAA; the A record would not match anyway.
        {kV6Ptr, kPtr, "v6.example.test"},
        {"v6.example.test", kAAAA, "2001:db8::5"},
        {"v6.example.test", kA, "127.0.0.1"},
    };
}

}  // namespace

TEST_CASE("dns client against rbldnsd: listed, not listed, refused, shared, cancelled") {
    Rbldnsd rbldnsd;
    if (!rbldnsd.running()) {
        MESSAGE("skipped: cannot start ", kRbldnsd);
        return;
    }
    ResolverSetup setup(rbldnsd.endpoint(), 2000ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    SUBCASE("a listed address gets its A record and TTL, never from inside lookup()") {
        Received r;
        auto sub = resolver.lookup_dnsbl(client("127.0.0.2"), "bl.example", r);
        CHECK(r.calls == 0);
        REQUIRE(loop.run_until([&] { return r.calls > 0; }));
        CHECK(r.reply.status == DnsblReply::Status::Listed);
        CHECK(r.reply.addresses == std::vector<uint32_t>{ip(127, 0, 0, 2)});
        CHECK(r.reply.ttl == 900);
    }
    SUBCASE("two datasets give two A records; the zone name is matched case-blind") {
        Received r;
        auto sub = resolver.lookup_dnsbl(client("127.0.0.3"), "BL.Example", r);
        REQUIRE(loop.run_until([&] { return r.calls > 0; }));
        CHECK(r.reply.status == DnsblReply::Status::Listed);
        auto addrs = r.reply.addresses;
        std::sort(addrs.begin(), addrs.end());
        CHECK(addrs == std::vector<uint32_t>{ip(127, 0, 0, 4), ip(127, 0, 0, 10)});
        CHECK(r.reply.ttl == 600);
    }
    SUBCASE("NXDOMAIN is not listed, with the SOA's negative TTL") {
        Received r;
        auto sub = resolver.lookup_dnsbl(client("127.0.0.9"), "bl.example", r);
        REQUIRE(loop.run_until([&] { return r.calls > 0; }));
        CHECK(r.reply.status == DnsblReply::Status::NotListed);
        CHECK(r.reply.addresses.empty());
        CHECK(r.reply.ttl == 120);
        CHECK(stderr_log.count("dnsbl query") == 0);
    }
    SUBCASE("a zone the server refuses fails, logged once for two subscribers") {
        Received a, b;
        auto sub_a = resolver.lookup_dnsbl(client("127.0.0.2"), "other.example", a);
        auto sub_b = resolver.lookup_dnsbl(client("127.0.0.2"), "other.example", b);
        REQUIRE(loop.run_until([&] { return a.calls > 0 && b.calls > 0; }));
        CHECK(a.reply.status == DnsblReply::Status::Failed);
        CHECK(a.reply.error == "REFUSED");
        CHECK(stderr_log.count("warning: dnsbl query 2.0.0.127.other.example failed: REFUSED\n") == 1);
    }
    SUBCASE("concurrent lookups for one client and zone share one query") {
        Received a, b;
        auto sub_a = resolver.lookup_dnsbl(client("192.0.2.7"), "bl.example", a);
        auto sub_b = resolver.lookup_dnsbl(client("192.0.2.7"), "bl.example", b);
        REQUIRE(loop.run_until([&] { return a.calls > 0 && b.calls > 0; }));
        CHECK(a.calls == 1);
        CHECK(b.calls == 1);
        CHECK(a.reply.status == DnsblReply::Status::Listed);
        CHECK(b.reply.addresses == a.reply.addresses);
        CHECK(rbldnsd.queries("7.2.0.192.bl.example") == 1);

        // Once answered, a new lookup asks again (caching is the verdict cache's job).
        Received c;
        auto sub_c = resolver.lookup_dnsbl(client("192.0.2.7"), "bl.example", c);
        REQUIRE(loop.run_until([&] { return c.calls > 0; }));
        CHECK(rbldnsd.queries("7.2.0.192.bl.example") == 2);
    }
    SUBCASE("a cancelled or destroyed subscription is never called") {
        Received kept, cancelled, destroyed;
        auto sub_kept = resolver.lookup_dnsbl(client("127.0.0.2"), "wl.example", kept);
        auto sub_cancelled = resolver.lookup_dnsbl(client("127.0.0.2"), "wl.example", cancelled);
        {
            auto sub_destroyed = resolver.lookup_dnsbl(client("127.0.0.2"), "wl.example", destroyed);
        }
        sub_cancelled.cancel();
        sub_cancelled.cancel();  // twice is harmless
        REQUIRE(loop.run_until([&] { return kept.calls > 0; }));
        CHECK(kept.reply.addresses == std::vector<uint32_t>{ip(127, 0, 10, 2)});
        CHECK(kept.reply.ttl == 3600);
        CHECK(cancelled.calls == 0);
        CHECK(destroyed.calls == 0);
    }
    SUBCASE("a moved subscription still cancels") {
        Received r;
        DnsblSubscription outer;
        {
            auto inner = resolver.lookup_dnsbl(client("127.0.0.2"), "bl.example", r);
            outer = std::move(inner);
        }
        outer = DnsblSubscription();
        Received other;
        auto sub = resolver.lookup_dnsbl(client("127.0.0.3"), "bl.example", other);
        REQUIRE(loop.run_until([&] { return other.calls > 0; }));
        CHECK(r.calls == 0);
    }
    SUBCASE("an IPv6 client is queried by nibbles") {
        Received r;
        auto sub = resolver.lookup_dnsbl(client("2001:db8::1"), "bl.example", r);
        REQUIRE(loop.run_until([&] { return r.calls > 0; }));
        CHECK(r.reply.status != DnsblReply::Status::Listed);
    }
    resolver.close();
}

TEST_CASE("dnsbl check against rbldnsd: one query per zone, weights summed") {
    Rbldnsd rbldnsd;
    if (!rbldnsd.running()) {
        MESSAGE("skipped: cannot start ", kRbldnsd);
        return;
    }
    UvLoop loop;
    Logger log(false, "smtpscreen", false);
    DnsClient resolver(&loop.loop, {rbldnsd.endpoint()}, 2000ms, log);
    std::vector<std::string> errors;
    auto sites = parse_dnsbl_sites(
        "bl.example=127.0.0.4*2, bl.example=127.0.0.[9..10]*3, bl.example*1, bl.example=127.0.0.2*7, "
        "wl.example=127.0.[0..255].[1..3]*-2",
        &errors);
    REQUIRE(errors.empty());

    int updates = 0;
    OnUpdate listed_listener([&] { ++updates; });
    WaitingCheck listed(resolver, sites, client("127.0.0.3"), listed_listener);
    OnUpdate allowlisted_listener([] {});
    WaitingCheck allowlisted(resolver, sites, client("127.0.0.2"), allowlisted_listener);
    REQUIRE(loop.run_until([&] { return listed.complete() && allowlisted.complete(); }));
    CHECK(updates == 2);
    CHECK(listed.score() == 2 + 3 + 1);
    CHECK(listed.top_zone() == "bl.example");
    CHECK(listed.min_ttl() == 0u);  // wl.example has no SOA: its NXDOMAIN carries no TTL
    CHECK(listed.listed_for_sure(6));
    CHECK(allowlisted.score() == 1 + 7 - 2);
    CHECK(rbldnsd.queries("3.0.0.127.bl.example") == 1);
    CHECK(rbldnsd.queries("3.0.0.127.wl.example") == 1);
    resolver.close();
}

TEST_CASE("dns client: a server that never answers fails within the timeout, logged once") {
    LoopbackUdp silent;
    ResolverSetup setup(silent.endpoint(), 600ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    Received a, b;
    const auto start = std::chrono::steady_clock::now();
    auto sub_a = resolver.lookup_dnsbl(client("127.0.0.2"), "zen.example", a);
    auto sub_b = resolver.lookup_dnsbl(client("127.0.0.2"), "zen.example", b);
    REQUIRE(loop.run_until([&] { return a.calls > 0 && b.calls > 0; }, 3000ms));
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(a.at - start);
    CHECK(a.reply.status == DnsblReply::Status::Failed);
    CHECK(a.reply.error == "timeout");
    CHECK(b.reply.error == "timeout");
    CHECK(elapsed >= 500ms);   // c-ares's tries add up to about the timeout ...
    CHECK(elapsed <= 900ms);   // ... and the resolver's own deadline caps it
    CHECK(stderr_log.count("warning: dnsbl query 2.0.0.127.zen.example failed: timeout\n") == 1);
    resolver.close();
}

TEST_CASE("dns client: a zone that keeps timing out is skipped, logged once") {
    LoopbackUdp silent;
    ResolverSetup setup(silent.endpoint(), 200ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    std::vector<Received> replies(5);
    std::vector<DnsblSubscription> subs;
    for (int i = 0; i < 5; ++i) {
        subs.push_back(resolver.lookup_dnsbl(client(("192.0.2." + std::to_string(i + 1)).c_str()), "dead.example",
                                       replies[static_cast<size_t>(i)]));
    }
    REQUIRE(loop.run_until([&] {
        return std::all_of(replies.begin(), replies.end(), [](const Received& r) { return r.calls > 0; });
    }));
    CHECK(stderr_log.count("failed: timeout") == 5);
    CHECK(stderr_log.count("warning: dnsbl zone dead.example timed out 5 times in a row; skipping it for 60s") == 1);

    // Skipped: Failed at once (but not from inside lookup()), no further log line.
    Received skipped, other_zone;
    const auto start = std::chrono::steady_clock::now();
    auto sub = resolver.lookup_dnsbl(client("192.0.2.99"), "dead.example", skipped);
    auto sub_other = resolver.lookup_dnsbl(client("192.0.2.99"), "other.example", other_zone);
    CHECK(skipped.calls == 0);
    REQUIRE(loop.run_until([&] { return skipped.calls > 0; }));
    CHECK(skipped.at - start < 150ms);  // well inside the 200 ms timeout: never asked
    CHECK(skipped.reply.status == DnsblReply::Status::Failed);
    CHECK(skipped.reply.error == "zone skipped after repeated timeouts");
    CHECK(other_zone.calls == 0);  // other zones are still asked
    CHECK(stderr_log.count("192.0.2.99") == 0);
    CHECK(stderr_log.count("skipping it") == 1);
    resolver.close();
}

TEST_CASE("dns client: answers that came while the loop was busy are read before the deadline") {
    // A burst of accepts can keep the loop away from the DNS socket for longer than
    // dnsbl.timeout. libuv then runs the timer before it polls: the answers waiting in
    // the socket must count as answers, not as timeouts that switch the zone off.
    constexpr int kClients = 8;
    std::vector<FakeDns::Record> records;
    for (int i = 1; i <= kClients; ++i) records.push_back({std::to_string(i) + ".2.0.192.busy.example", kA, "127.0.0.2"});
    FakeDns dns(records);
    ResolverSetup setup(dns.endpoint(), 300ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    std::vector<Received> replies(kClients);
    std::vector<DnsblSubscription> subs;
    for (int i = 1; i <= kClients; ++i) {
        subs.push_back(resolver.lookup_dnsbl(client(("192.0.2." + std::to_string(i)).c_str()), "busy.example",
                                       replies[static_cast<size_t>(i - 1)]));
    }
    // c-ares sends at once; the loop is busy elsewhere until well past the deadline.
    const auto end = std::chrono::steady_clock::now() + 2s;
    while (dns.queries() < kClients && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
    REQUIRE(dns.queries() == kClients);
    std::this_thread::sleep_for(500ms);

    REQUIRE(loop.run_until([&] {
        return std::all_of(replies.begin(), replies.end(), [](const Received& r) { return r.calls > 0; });
    }));
    for (const auto& r : replies) {
        CHECK(r.reply.status == DnsblReply::Status::Listed);
        CHECK(r.reply.error.empty());
    }
    CHECK(stderr_log.count("failed: timeout") == 0);
    CHECK(stderr_log.count("skipping it") == 0);
    resolver.close();
}

TEST_CASE("dns client: close() fails pending lookups and lets the loop end") {
    UvLoop loop;
    LoopbackUdp silent;
    Logger log(false, "smtpscreen", false);
    Received r, cancelled;
    {
        DnsClient resolver(&loop.loop, {silent.endpoint()}, 5000ms, log);
        auto sub = resolver.lookup_dnsbl(client("127.0.0.2"), "zen.example", r);
        auto sub_cancelled = resolver.lookup_dnsbl(client("127.0.0.2"), "zen.example", cancelled);
        loop.run_until([] { return false; }, 50ms);
        sub_cancelled.cancel();
        resolver.close();
        resolver.close();  // idempotent
        CHECK(r.calls == 0);
        // With nothing but the resolver in it, the loop runs the answer out and ends.
        CHECK(uv_run(&loop.loop, UV_RUN_DEFAULT) == 0);
        CHECK(r.calls == 1);
        CHECK(r.reply.status == DnsblReply::Status::Failed);
        CHECK(r.reply.error == "resolver closed");
        CHECK(cancelled.calls == 0);
    }  // destructor after close
}

TEST_CASE("dns client: destroyed without close() while a query is pending") {
    UvLoop loop;
    LoopbackUdp silent;
    Logger log(false, "smtpscreen", false);
    Received r;
    DnsblSubscription sub;
    {
        DnsClient resolver(&loop.loop, {silent.endpoint()}, 5000ms, log);
        sub = resolver.lookup_dnsbl(client("127.0.0.2"), "zen.example", r);
        loop.run_until([] { return false; }, 20ms);
    }
    sub.cancel();  // outliving the resolver is harmless
    CHECK(uv_run(&loop.loop, UV_RUN_DEFAULT) == 0);
    CHECK(r.calls == 0);
}

TEST_CASE("dns client: a closed port fails fast") {
    UvLoop loop;
    Logger log(false, "smtpscreen", false);
    uint16_t port;
    {
        LoopbackUdp probe;
        port = probe.port();
    }
    DnsClient resolver(&loop.loop, {*Endpoint::parse_ip("127.0.0.1", port)}, 3000ms, log);
    Received r;
    auto sub = resolver.lookup_dnsbl(client("127.0.0.2"), "zen.example", r);
    REQUIRE(loop.run_until([&] { return r.calls > 0; }, 2000ms));
    CHECK(r.reply.status == DnsblReply::Status::Failed);
    CHECK(r.reply.error == "connection refused");
    resolver.close();
}

TEST_CASE("dns client: verified client name (PTR, then A or AAAA back to the client)") {
    FakeDns dns(rdns_records(), {"slow.example.test"});
    ResolverSetup setup(dns.endpoint(), 2000ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    auto resolve = [&](const char* ip) {
        ReceivedName r;
        auto sub = resolver.lookup_verified_name(client(ip), r.callback());
        CHECK(r.calls == 0);  // never from inside lookup_verified_name()
        REQUIRE(loop.run_until([&] { return r.calls > 0; }));
        CHECK(r.calls == 1);
        return r.name;
    };

    SUBCASE("a name whose A records include the client is answered, lower case") {
        CHECK(resolve("127.0.0.5") == "mail.example.test");
        CHECK(dns.queries("5.0.0.127.in-addr.arpa", kPtr) == 1);
        CHECK(dns.queries("mail.example.test", kA) == 1);
    }
    SUBCASE("a name that resolves to other addresses is no name") {
        CHECK(resolve("127.0.0.6") == "");
        CHECK(dns.queries("other.example.test", kA) == 1);
    }
    SUBCASE("a name that does not resolve is no name") {
        CHECK(resolve("127.0.0.7") == "");
        CHECK(dns.queries("nowhere.example.test", kA) == 1);
    }
    SUBCASE("no PTR record: no name, no forward question") {
        CHECK(resolve("127.0.0.8") == "");
        CHECK(dns.queries("8.0.0.127.in-addr.arpa", kPtr) == 1);
        CHECK(dns.queries() == 1);
    }
    SUBCASE("with several names, the first that resolves back") {
        CHECK(resolve("127.0.0.10") == "b.example.test");
        CHECK(dns.queries("a.example.test", kA) == 1);
    }
    SUBCASE("only the first few names are tried") {
        CHECK(resolve("127.0.0.12") == "");
        CHECK(dns.queries("n1.example.test", kA) == 1);
        CHECK(dns.queries("n6.example.test", kA) == 0);
    }
    SUBCASE("names that are not hostnames are ignored, even when they resolve back") {
        CHECK(resolve("127.0.0.13") == "");
        CHECK(dns.queries() == 1);  // nothing but the PTR question
        CHECK(resolve("127.0.0.14") == "good.example.test");
        CHECK(dns.queries("bad_name.example.test", kA) == 0);
    }
    SUBCASE("a PTR behind a CNAME (RFC 2317) is followed") {
        CHECK(resolve("127.0.0.15") == "classless.example.test");
    }
    SUBCASE("an IPv6 client is verified by AAAA") {
        CHECK(resolve("2001:db8::5") == "v6.example.test");
        CHECK(dns.queries(kV6Ptr, kPtr) == 1);
        CHECK(dns.queries("v6.example.test", kAAAA) == 1);
        CHECK(dns.queries("v6.example.test", kA) == 0);
    }
    SUBCASE("concurrent lookups for one client share the questions") {
        ReceivedName a, b;
        auto sub_a = resolver.lookup_verified_name(client("127.0.0.5"), a.callback());
        auto sub_b = resolver.lookup_verified_name(client("127.0.0.5"), b.callback());
        REQUIRE(loop.run_until([&] { return a.calls > 0 && b.calls > 0; }));
        CHECK(a.calls == 1);
        CHECK(b.calls == 1);
        CHECK(a.name == "mail.example.test");
        CHECK(b.name == "mail.example.test");
        CHECK(dns.queries("5.0.0.127.in-addr.arpa", kPtr) == 1);
        CHECK(dns.queries("mail.example.test", kA) == 1);
        // Once answered, a new lookup asks again.
        CHECK(resolve("127.0.0.5") == "mail.example.test");
        CHECK(dns.queries("5.0.0.127.in-addr.arpa", kPtr) == 2);
    }
    SUBCASE("a cancelled or destroyed subscription is never called") {
        ReceivedName kept, cancelled, destroyed;
        auto sub_kept = resolver.lookup_verified_name(client("127.0.0.5"), kept.callback());
        auto sub_cancelled = resolver.lookup_verified_name(client("127.0.0.5"), cancelled.callback());
        { auto sub_destroyed = resolver.lookup_verified_name(client("127.0.0.5"), destroyed.callback()); }
        sub_cancelled.cancel();
        REQUIRE(loop.run_until([&] { return kept.calls > 0; }));
        CHECK(kept.name == "mail.example.test");
        // Long enough for a stray callback to show.
        loop.run_until([] { return false; }, 100ms);
        CHECK(cancelled.calls == 0);
        CHECK(destroyed.calls == 0);
    }
    SUBCASE("a lone cancelled lookup is never called") {
        ReceivedName cancelled, other;
        auto sub = resolver.lookup_verified_name(client("127.0.0.10"), cancelled.callback());
        sub.cancel();
        auto sub_other = resolver.lookup_verified_name(client("127.0.0.6"), other.callback());
        REQUIRE(loop.run_until([&] { return other.calls > 0; }));
        loop.run_until([] { return false; }, 100ms);
        CHECK(cancelled.calls == 0);
    }
    CHECK(stderr_log.text() == "");  // a client without a verified name is not news
    resolver.close();
}

TEST_CASE("dns client: verified client name when the forward question is never answered") {
    // The PTR question is answered on c-ares's second try, a third of the timeout in;
    // the A question never. c-ares alone would give up on the A question a whole
    // timeout after asking it: 1600 ms in. One timeout bounds both steps: 1200 ms.
    FakeDns dns(rdns_records(), {"slow.example.test"}, {"16.0.0.127.in-addr.arpa"});
    ResolverSetup setup(dns.endpoint(), 1200ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    ReceivedName r;
    const auto start = std::chrono::steady_clock::now();
    auto sub = resolver.lookup_verified_name(client("127.0.0.16"), r.callback());
    REQUIRE(loop.run_until([&] { return r.calls > 0; }, 4000ms));
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(r.at - start);
    CHECK(r.name == "");
    CHECK(dns.queries("16.0.0.127.in-addr.arpa", kPtr) == 2);
    CHECK(dns.queries("slow.example.test", kA) >= 1);
    CHECK(elapsed >= 1100ms);  // it did wait for the answer ...
    CHECK(elapsed <= 1450ms);  // ... within one timeout for both steps
    CHECK(stderr_log.text() == "");
    resolver.close();
}

TEST_CASE("dns client: verified client name from a server that never answers") {
    LoopbackUdp silent;
    ResolverSetup setup(silent.endpoint(), 600ms);
    [[maybe_unused]] auto& [loop, stderr_log, log, resolver] = setup;

    ReceivedName a, b;
    const auto start = std::chrono::steady_clock::now();
    auto sub_a = resolver.lookup_verified_name(client("127.0.0.5"), a.callback());
    auto sub_b = resolver.lookup_verified_name(client("127.0.0.5"), b.callback());
    REQUIRE(loop.run_until([&] { return a.calls > 0 && b.calls > 0; }, 3000ms));
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(a.at - start);
    CHECK(a.name == "");
    CHECK(b.name == "");
    CHECK(elapsed >= 500ms);
    CHECK(elapsed <= 900ms);
    CHECK(stderr_log.text() == "");
    resolver.close();
}

TEST_CASE("dns client: close() answers pending verified-name lookups with no name") {
    UvLoop loop;
    LoopbackUdp silent;
    Logger log(false, "smtpscreen", false);
    ReceivedName r, cancelled;
    {
        DnsClient resolver(&loop.loop, {silent.endpoint()}, 5000ms, log);
        auto sub = resolver.lookup_verified_name(client("127.0.0.5"), r.callback());
        auto sub_cancelled = resolver.lookup_verified_name(client("127.0.0.5"), cancelled.callback());
        loop.run_until([] { return false; }, 50ms);
        sub_cancelled.cancel();
        resolver.close();
        CHECK(r.calls == 0);
        CHECK(uv_run(&loop.loop, UV_RUN_DEFAULT) == 0);
        CHECK(r.calls == 1);
        CHECK(r.name == "");
        CHECK(cancelled.calls == 0);
    }
}
