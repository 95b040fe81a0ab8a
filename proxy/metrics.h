#pragma once
// What one worker loop counts for the Prometheus endpoint (smtpscreen(8), METRICS).
//
// Only the worker's own thread writes its counters; the stats endpoint's thread reads
// every worker's at a scrape and adds them up. So the session path takes no lock and
// shares no cache line with another loop: each counter is a relaxed atomic with a
// single writer, bumped by a load and a store (no locked read-modify-write), and a
// scrape sees each number whole, though not all of them at one instant.
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dnsbl/dns_client.h"
#include "edge/rate_limit.h"
#include "screen/test_results.h"

namespace smtpscreen {

// One count with a single writer thread and any number of readers.
class Counter {
public:
    void add(uint64_t n = 1) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    void sub(uint64_t n = 1) { value_.store(value_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
    uint64_t get() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> value_{0};
};

// The DISCONNECT outcomes, in the order the endpoint lists them; one the list does not
// name is counted as "other".
inline constexpr std::array<std::string_view, 20> kSessionOutcomes{
    "handoff",     "rejected",      "dropped",      "tarpit",       "hangup",       "quit",       "timeout",
    "idle-timeout", "backend-refused", "backend-unavailable", "too-many-connections", "rate-limit",
    "banned",      "tls-failed",    "tls-timeout",  "bad-message",  "proxy-refused", "proxy-error", "shutdown",
    "other"};

// Where a session is now (docs/design.md, "The life of a connection").
enum class SessionPhase : uint8_t { ProxyHeader, HealthCheck, Cache, GreetWait, DnsblWait, Enforce, Tarpit, Deep, TlsFirst, Handoff, Relay, Count };
inline constexpr std::array<std::string_view, static_cast<size_t>(SessionPhase::Count)> kPhaseNames{
    "proxy_header", "health_check", "cache", "greet_wait", "dnsbl_wait", "enforce", "tarpit", "deep", "tls_first", "handoff", "relay"};

// Tests a client can fail: the five of TestResults and the access list's reject.
inline constexpr size_t kFailureKinds = kTestCount + 1;
inline constexpr size_t kAccessFailure = kTestCount;

enum class Pass : uint8_t { New, Old, Allowlisted, Count };
inline constexpr std::array<std::string_view, 3> kPassNames{"new", "old", "allowlisted"};

enum class CacheResult : uint8_t { Hit, Expired, Miss, Count };
inline constexpr std::array<std::string_view, 3> kCacheResultNames{"hit", "expired", "miss"};

enum class TlsResult : uint8_t { Full, Resumed, Failed, Count };
inline constexpr std::array<std::string_view, 3> kTlsResultNames{"full", "resumed", "failed"};

// DNSBL lookups answered (or given up at dnsbl.timeout), by zone.
inline constexpr std::array<std::string_view, 3> kDnsblResultNames{"listed", "not_listed", "failed"};
// Upper bounds of the latency histogram's buckets, in milliseconds (+Inf follows).
inline constexpr std::array<uint64_t, 11> kDnsblBucketsMs{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

struct ZoneMetrics {
    std::string zone;  // written once, before the zone is published
    std::array<Counter, kDnsblResultNames.size()> results;
    std::array<Counter, kDnsblBucketsMs.size()> buckets;  // not cumulative; the exposition adds them up
    Counter over_last_bucket;
    Counter latency_ms_sum;
};

class WorkerMetrics {
public:
    // More zones than this in dnsbl.sites over a process's life (reloads included) are
    // counted together under zone="other".
    static constexpr size_t kMaxZones = 32;

    Counter connections;  // accepted on an SMTP listener, health checks included
    std::array<Counter, kSessionOutcomes.size()> sessions_ended;
    std::array<Counter, static_cast<size_t>(SessionPhase::Count)> sessions_now;
    std::array<Counter, kFailureKinds> test_failures;
    std::array<Counter, static_cast<size_t>(Pass::Count)> passes;
    std::array<Counter, static_cast<size_t>(CacheResult::Count)> cache_lookups;
    std::array<Counter, static_cast<size_t>(TlsResult::Count)> tls_handshakes;
    Counter backend_connect_failures;  // unreachable, or no greeting in time
    Counter backend_refusals;          // greeted with anything but 220
    // The edge defences (docs/design.md, "Edge defences"): connections refused by
    // limits.per_client_rate and limits.per_network_rate, by RateScope.
    std::array<Counter, kRateScopeNames.size()> rate_limited;
    Counter bans;                // clients banned (ban.after)
    Counter banned_connections;  // connections of banned clients, refused at once
    // greylist.enable: RCPTs refused with 450 (a new triplet, or a retry too early),
    // retries let through after greylist.delay, and RCPTs let through because the
    // triplets' store (Redis) could not answer in time.
    Counter greylisted;
    Counter greylist_passed;
    Counter greylist_unanswered;
    // tarpit: clients dropped instead because tarpit.max_connections were held already.
    Counter tarpit_full;

    void session_ended(std::string_view outcome);
    void enter_phase(SessionPhase from, SessionPhase to);
    void leave_phase(SessionPhase from);
    void dnsbl_answer(std::string_view zone, DnsblReply::Status status, uint64_t latency_ms);

    // Zones published so far, for the reader: every zone below the count is whole.
    size_t zone_count() const { return zone_count_.load(std::memory_order_acquire); }
    const ZoneMetrics& zone(size_t i) const { return zones_[i]; }

private:
    ZoneMetrics& zone_slot(std::string_view zone);

    std::array<ZoneMetrics, kMaxZones + 1> zones_;  // the last one is "other"
    std::atomic<size_t> zone_count_{0};
};

// Read at a scrape by the scraping thread: from /proc/self, and the size of the table
// the loops share (edge/connection_rates.h).
struct ProcessFigures {
    double cpu_seconds = 0;
    uint64_t resident_bytes = 0;
    uint64_t virtual_bytes = 0;
    uint64_t open_fds = 0;
    uint64_t max_fds = 0;
    double start_time_seconds = 0;  // since the Unix epoch
    uint64_t rate_table_keys = 0;   // addresses and networks in the rate limits' table now
    uint64_t greylist_triplets = 0; // triplets in the greylist's table now
    uint64_t tarpitted = 0;         // clients in the tarpit now (at most tarpit.max_connections)
};
ProcessFigures read_process_figures();

// The Prometheus text exposition format (version 0.0.4) of the sum of every worker's
// counters and the process figures (the endpoint adds its own).
std::string format_metrics(const std::vector<const WorkerMetrics*>& workers, const ProcessFigures& process);

}  // namespace smtpscreen
