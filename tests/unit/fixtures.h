#pragma once
// What several unit tests build around the code under test, in one place: a libuv loop
// run until something happens, a scratch directory, this process's stderr (where the
// Logger writes) captured, a UDP socket on loopback, and DNS messages written byte by
// byte as a server (or an attacker) would send them. Real sockets, files and loops; no
// fakes of the code under test.
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"
#include "core/uv_handle.h"
#include "dnsbl/check.h"
#include "dnsbl/dns_client.h"
#include "dnsbl/site.h"

namespace smtpscreen::test {

// Runs `f` after each zone's answer to a WaitingCheck (`f` may destroy the check).
struct OnUpdate final {
    explicit OnUpdate(std::function<void()> f) : on_update(std::move(f)) {}
    std::function<void()> on_update;
};

// A DnsblCheck with its waiter, as a session holds one (proxy/session.cpp): keeps the
// verdict so far from each answer, finishes the check once it is complete, and tells
// the listener last (it may destroy this object).
class WaitingCheck final : DnsblWaiter {
public:
    WaitingCheck(DnsClient& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client, OnUpdate& listener)
        : sites_(sites), listener_(listener) {
        check_.start(resolver, sites, client, *this);
    }

    bool complete() const { return check_.complete(); }
    bool active() const { return check_.active(); }
    int score() const { return verdict_.score; }
    std::string top_zone() const { return std::string(verdict_.top_zone()); }
    std::optional<uint32_t> min_ttl() const { return verdict_.min_ttl; }
    bool any_failed() const { return verdict_.any_failed; }
    bool listed_for_sure(int threshold) const { return check_.listed_for_sure(sites_, verdict_.score, threshold); }
    void expire() {
        verdict_ = check_.expire(sites_, [this](const std::string& zone) { expired.push_back(zone); });
    }
    std::vector<std::string> answered;  // the zones, in the order they answered
    std::vector<std::string> expired;   // the zones still unanswered at expire()

private:
    void dnsbl_reply(DnsblSubscription& which, const DnsblReply& reply) override {
        const DnsblCheck::Answer answer = check_.answer(sites_, which, reply);
        if (!answer.zone) return;
        answered.push_back(*answer.zone);
        verdict_ = answer.verdict;
        if (check_.complete()) check_.finish();
        listener_.on_update();  // may destroy this object: touch no member after it
    }

    const std::vector<DnsblSite>& sites_;
    OnUpdate& listener_;
    DnsblCheck check_;
    DnsblVerdict verdict_;
};

// One loop per test case; closing it at scope end checks that every handle was closed.
struct UvLoop {
    uv_loop_t loop{};
    UvLoop();
    ~UvLoop();
    UvLoop(const UvLoop&) = delete;
    UvLoop& operator=(const UvLoop&) = delete;

    // Runs until done() or the limit; a ticking timer keeps each UV_RUN_ONCE short.
    template <typename Pred>
    bool run_until(Pred done, std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
        UvHandle<uv_timer_t> tick([this](uv_timer_t* t) { return uv_timer_init(&loop, t); });
        uv_timer_start(tick.get(), [](uv_timer_t*) {}, 5, 5);
        const auto end = std::chrono::steady_clock::now() + limit;
        while (!done() && std::chrono::steady_clock::now() < end) uv_run(&loop, UV_RUN_ONCE);
        return done();
    }
    void run_for(std::chrono::milliseconds d);
};

// A fresh directory under the system temp dir, removed with its contents at scope end
// (made writable first, so a test may take its permissions away).
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "smtpscreen-test");
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& dir() const { return dir_; }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    // Writes name (mode 0644, whatever the umask); returns its path.
    std::string write(const std::string& name, const std::string& text) const;

private:
    std::filesystem::path dir_;
};

// Sends this process's stderr (where the Logger writes) to a file while alive.
class StderrCapture {
public:
    StderrCapture();
    ~StderrCapture();
    StderrCapture(const StderrCapture&) = delete;
    StderrCapture& operator=(const StderrCapture&) = delete;

    std::string text() const;
    int count(const std::string& needle) const;

private:
    std::FILE* file_ = nullptr;
    int saved_ = -1;
};

// A UDP socket bound to 127.0.0.1 on a port the kernel picks, closed at scope end.
// Nobody reading it makes a DNS server that never answers.
class LoopbackUdp {
public:
    LoopbackUdp();
    ~LoopbackUdp();
    LoopbackUdp(const LoopbackUdp&) = delete;
    LoopbackUdp& operator=(const LoopbackUdp&) = delete;

    int fd() const { return fd_; }
    uint16_t port() const { return port_; }
    Endpoint endpoint() const { return *Endpoint::parse_ip("127.0.0.1", port_); }

private:
    int fd_ = -1;
    uint16_t port_ = 0;
};

// A DNS message written field by field (RFC 1035 section 4.1).
struct DnsWire {
    std::string bytes;

    DnsWire& u8(unsigned v);
    DnsWire& u16(unsigned v) { return u8(v >> 8).u8(v); }
    DnsWire& u32(uint32_t v) { return u16(v >> 16).u16(v & 0xFFFF); }
    DnsWire& raw(std::string_view s);
    // Plain labels, then the root label.
    DnsWire& name(std::string_view dotted) { return labels(dotted).u8(0); }
    // Plain labels without the root label (for a name that ends in a pointer).
    DnsWire& labels(std::string_view dotted);
    DnsWire& pointer(unsigned offset) { return u16(0xC000 | offset); }
    DnsWire& header(uint16_t id, uint16_t flags, unsigned qd, unsigned an, unsigned ns = 0, unsigned ar = 0) {
        return u16(id).u16(flags).u16(qd).u16(an).u16(ns).u16(ar);
    }
    DnsWire& question(std::string_view qname, uint16_t type) { return name(qname).u16(type).u16(kClassIn); }
    // Type, class IN and TTL of a record whose owner was just written; RDLENGTH and
    // RDATA follow.
    DnsWire& record_head(uint16_t type, uint32_t ttl) { return u16(type).u16(kClassIn).u32(ttl); }
    DnsWire& rdata(std::string_view data) { return u16(static_cast<unsigned>(data.size())).raw(data); }
    DnsWire& a_rdata(unsigned a, unsigned b, unsigned c, unsigned d) { return u16(4).u8(a).u8(b).u8(c).u8(d); }
    DnsWire& a_rdata(uint32_t address) { return u16(4).u32(address); }

    static constexpr uint16_t kClassIn = 1;
};

// The flags of a server's answer to a query whose third octet is query_flags: QR and
// AA, the query's RD copied, RA, and rcode.
uint16_t answer_flags(unsigned char query_flags, unsigned rcode);

// The question of a query as a server reads it: the name as sent, its type, and where
// the question ends (what an answer copies). nullopt for a query cut short.
struct DnsQuestion {
    uint16_t id = 0;
    std::string name;
    uint16_t type = 0;
    size_t end = 0;
};
std::optional<DnsQuestion> read_question(std::string_view query);

}  // namespace smtpscreen::test
