#include "proxy/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

namespace smtpscreen {

void WorkerMetrics::session_ended(std::string_view outcome) {
    auto it = std::find(kSessionOutcomes.begin(), kSessionOutcomes.end(), outcome);
    if (it == kSessionOutcomes.end()) it = kSessionOutcomes.end() - 1;  // "other"
    sessions_ended[static_cast<size_t>(it - kSessionOutcomes.begin())].add();
}

void WorkerMetrics::enter_phase(SessionPhase from, SessionPhase to) {
    if (from == to) return;
    leave_phase(from);
    if (to != SessionPhase::Count) sessions_now[static_cast<size_t>(to)].add();
}

void WorkerMetrics::leave_phase(SessionPhase from) {
    if (from != SessionPhase::Count) sessions_now[static_cast<size_t>(from)].sub();
}

ZoneMetrics& WorkerMetrics::zone_slot(std::string_view zone) {
    const size_t n = zone_count_.load(std::memory_order_relaxed);  // this thread is the only writer
    for (size_t i = 0; i < n; ++i) {
        if (zones_[i].zone == zone) return zones_[i];
    }
    if (n == kMaxZones + 1) return zones_[kMaxZones];
    ZoneMetrics& slot = zones_[n];
    slot.zone = n == kMaxZones ? std::string("other") : std::string(zone);
    // The name is whole before a reader can see the slot.
    zone_count_.store(n + 1, std::memory_order_release);
    return slot;
}

void WorkerMetrics::dnsbl_answer(std::string_view zone, DnsblReply::Status status, uint64_t latency_ms) {
    ZoneMetrics& z = zone_slot(zone);
    size_t result = status == DnsblReply::Status::Listed ? 0 : status == DnsblReply::Status::NotListed ? 1 : 2;
    z.results[result].add();
    auto bucket = std::lower_bound(kDnsblBucketsMs.begin(), kDnsblBucketsMs.end(), latency_ms);
    if (bucket == kDnsblBucketsMs.end()) z.over_last_bucket.add();
    else z.buckets[static_cast<size_t>(bucket - kDnsblBucketsMs.begin())].add();
    z.latency_ms_sum.add(latency_ms);
}

// ---------------------------------------------------------------- process figures

ProcessFigures read_process_figures() {
    ProcessFigures p;
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    std::ifstream stat("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // proc(5): the command name in parentheses may hold spaces; the fields follow the last ')'.
    if (size_t close = text.rfind(')'); close != std::string::npos) {
        std::istringstream fields(text.substr(close + 2));
        std::vector<std::string> f;
        for (std::string item; fields >> item;) f.push_back(item);
        // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
        if (f.size() > 21) {
            p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
            p.virtual_bytes = std::stoull(f[20]);
            p.resident_bytes = static_cast<uint64_t>(std::stod(f[21]) * page);
            std::ifstream uptime_file("/proc/uptime");
            double uptime = 0;
            uptime_file >> uptime;
            timespec now{};
            ::clock_gettime(CLOCK_REALTIME, &now);
            const double boot = static_cast<double>(now.tv_sec) + now.tv_nsec / 1e9 - uptime;
            p.start_time_seconds = boot + std::stod(f[19]) / ticks;
        }
    }
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++p.open_fds;
    }
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) p.max_fds = nofile.rlim_cur;
    return p;
}

// ---------------------------------------------------------------- exposition

namespace {

class Exposition {
public:
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    template <typename T>
    void sample(std::string_view name, std::string_view labels, T value) {
        if (labels.empty()) out_ += fmt::format("{} {}\n", name, value);
        else out_ += fmt::format("{}{{{}}} {}\n", name, labels, value);
    }
    // A family of one unlabelled sample.
    template <typename T>
    void single(std::string_view name, std::string_view type, std::string_view help, T value) {
        family(name, type, help);
        sample(name, "", value);
    }
    // One sample per value of `label`: names[i] with values[i].
    template <size_t N>
    void by_label(std::string_view name, std::string_view label, const std::array<std::string_view, N>& names,
                  const std::array<uint64_t, N>& values) {
        for (size_t i = 0; i < N; ++i) sample(name, fmt::format("{}=\"{}\"", label, names[i]), values[i]);
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

// A label value as the text format wants it: backslash, double quote and newline escaped.
std::string label_value(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

template <size_t N>
std::array<uint64_t, N> sum(const std::vector<const WorkerMetrics*>& workers,
                            const std::array<Counter, N> WorkerMetrics::*field) {
    std::array<uint64_t, N> total{};
    for (const auto* w : workers) {
        for (size_t i = 0; i < N; ++i) total[i] += (w->*field)[i].get();
    }
    return total;
}

uint64_t sum(const std::vector<const WorkerMetrics*>& workers, const Counter WorkerMetrics::*field) {
    uint64_t total = 0;
    for (const auto* w : workers) total += (w->*field).get();
    return total;
}

struct ZoneTotals {
    std::array<uint64_t, kDnsblResultNames.size()> results{};
    std::array<uint64_t, kDnsblBucketsMs.size()> buckets{};
    uint64_t over_last = 0;
    uint64_t sum_ms = 0;
};

std::string seconds(uint64_t ms) { return fmt::format("{}", static_cast<double>(ms) / 1000.0); }

}  // namespace

std::string format_metrics(const std::vector<const WorkerMetrics*>& workers, const ProcessFigures& process) {
    Exposition e;
    e.family("smtpscreen_build_info", "gauge", "Always 1; the version runs in the label.");
    e.sample("smtpscreen_build_info", fmt::format("version=\"{}\"", label_value(SMTPSCREEN_VERSION)), 1);

    e.single("smtpscreen_connections_total", "counter",
             "TCP connections accepted on the SMTP listeners, load balancer health checks included.",
             sum(workers, &WorkerMetrics::connections));

    e.family("smtpscreen_sessions_total", "counter", "Client sessions ended, by the outcome of their DISCONNECT line.");
    e.by_label("smtpscreen_sessions_total", "outcome", kSessionOutcomes, sum(workers, &WorkerMetrics::sessions_ended));

    e.family("smtpscreen_sessions", "gauge", "Sessions in progress, by the step they are in.");
    auto now = sum(workers, &WorkerMetrics::sessions_now);
    for (size_t i = 0; i < now.size(); ++i) {
        // A gauge: each loop's count is whole, so the sum wraps back into range.
        e.sample("smtpscreen_sessions", fmt::format("phase=\"{}\"", kPhaseNames[i]), static_cast<int64_t>(now[i]));
    }

    e.family("smtpscreen_test_failures_total", "counter",
             "Clients that failed a test (pregreet, dnsbl, pipelining, non_smtp, bare_newline, access), whatever "
             "the action.");
    auto failures = sum(workers, &WorkerMetrics::test_failures);
    for (size_t i = 0; i < failures.size(); ++i) {
        if (i == static_cast<size_t>(Test::Greylist)) continue;  // a pass to cache, never a failure
        std::string_view name = i == kAccessFailure ? std::string_view("access") : test_name(static_cast<Test>(i));
        e.sample("smtpscreen_test_failures_total", fmt::format("test=\"{}\"", name), failures[i]);
    }

    e.family("smtpscreen_passes_total", "counter",
             "Clients let through: new (PASS NEW), old (PASS OLD, from the cache), allowlisted (access.file permit).");
    e.by_label("smtpscreen_passes_total", "kind", kPassNames, sum(workers, &WorkerMetrics::passes));

    e.family("smtpscreen_cache_lookups_total", "counter",
             "Verdict cache lookups: hit (every enabled test still passed), expired (a record, but a test is due), "
             "miss (no record).");
    e.by_label("smtpscreen_cache_lookups_total", "result", kCacheResultNames,
               sum(workers, &WorkerMetrics::cache_lookups));

    e.family("smtpscreen_tls_handshakes_total", "counter", "STARTTLS handshakes with clients: full, resumed, failed.");
    e.by_label("smtpscreen_tls_handshakes_total", "result", kTlsResultNames,
               sum(workers, &WorkerMetrics::tls_handshakes));

    e.family("smtpscreen_backend_errors_total", "counter",
             "Handoffs that did not reach a relay: unavailable (no connection or greeting in time), refused "
             "(greeted with anything but 220).");
    e.sample("smtpscreen_backend_errors_total", "kind=\"unavailable\"",
             sum(workers, &WorkerMetrics::backend_connect_failures));
    e.sample("smtpscreen_backend_errors_total", "kind=\"refused\"", sum(workers, &WorkerMetrics::backend_refusals));

    e.family("smtpscreen_rate_limited_total", "counter",
             "Connections refused with 421 at once for going over limits.per_client_rate (client) or "
             "limits.per_network_rate (network).");
    e.by_label("smtpscreen_rate_limited_total", "scope", kRateScopeNames, sum(workers, &WorkerMetrics::rate_limited));
    e.single("smtpscreen_rate_table_keys", "gauge",
             "Client addresses and networks the rate limits count now (at most limits.rate_table_size).",
             process.rate_table_keys);

    e.single("smtpscreen_bans_total", "counter",
             "Clients banned for failing tests ban.after times (one per ban, as the BANNED lines).",
             sum(workers, &WorkerMetrics::bans));
    e.single("smtpscreen_banned_connections_total", "counter",
             "Connections of banned clients, refused at once with 521 (ban.action = drop).",
             sum(workers, &WorkerMetrics::banned_connections));

    e.single("smtpscreen_greylisted_total", "counter",
             "RCPT TO refused with 450 by greylist.enable: a new (network, sender, recipient) triplet, or a "
             "retry before greylist.delay.",
             sum(workers, &WorkerMetrics::greylisted));
    e.single("smtpscreen_greylist_passed_total", "counter",
             "Retries of a greylisted triplet let through after greylist.delay, within greylist.retry_window.",
             sum(workers, &WorkerMetrics::greylist_passed));
    e.single("smtpscreen_greylist_unanswered_total", "counter",
             "RCPT TO let through without greylisting because Redis (cache.backend = redis) could not answer "
             "within cache.redis_timeout.",
             sum(workers, &WorkerMetrics::greylist_unanswered));
    e.single("smtpscreen_greylist_triplets", "gauge",
             "Triplets the greylist keeps in this process's memory now (at most greylist.table_size; 0 with "
             "cache.backend = redis, which keeps them).",
             process.greylist_triplets);

    e.single("smtpscreen_tarpit_connections", "gauge",
             "Clients held in the tarpit now, every loop together (at most tarpit.max_connections).",
             process.tarpitted);
    e.single("smtpscreen_tarpit_full_total", "counter",
             "Clients dropped (521) instead of tarpitted because tarpit.max_connections were held already.",
             sum(workers, &WorkerMetrics::tarpit_full));

    std::map<std::string, ZoneTotals> zones;
    for (const auto* w : workers) {
        const size_t n = w->zone_count();
        for (size_t i = 0; i < n; ++i) {
            const ZoneMetrics& z = w->zone(i);
            ZoneTotals& t = zones[z.zone];
            for (size_t r = 0; r < t.results.size(); ++r) t.results[r] += z.results[r].get();
            for (size_t b = 0; b < t.buckets.size(); ++b) t.buckets[b] += z.buckets[b].get();
            t.over_last += z.over_last_bucket.get();
            t.sum_ms += z.latency_ms_sum.get();
        }
    }
    e.family("smtpscreen_dnsbl_queries_total", "counter",
             "DNSBL/DNSWL lookups of clients, by zone and result (failed: an error, or no answer within "
             "dnsbl.timeout).");
    for (const auto& [zone, t] : zones) {
        for (size_t r = 0; r < t.results.size(); ++r) {
            e.sample("smtpscreen_dnsbl_queries_total",
                     fmt::format("zone=\"{}\",result=\"{}\"", label_value(zone), kDnsblResultNames[r]), t.results[r]);
        }
    }
    e.family("smtpscreen_dnsbl_query_duration_seconds", "histogram",
             "Time from a client's greet wait start to its zone's answer, by zone.");
    for (const auto& [zone, t] : zones) {
        const std::string z = label_value(zone);
        uint64_t cumulative = 0;
        for (size_t b = 0; b < t.buckets.size(); ++b) {
            cumulative += t.buckets[b];
            e.sample("smtpscreen_dnsbl_query_duration_seconds_bucket",
                     fmt::format("zone=\"{}\",le=\"{}\"", z, seconds(kDnsblBucketsMs[b])), cumulative);
        }
        cumulative += t.over_last;
        e.sample("smtpscreen_dnsbl_query_duration_seconds_bucket", fmt::format("zone=\"{}\",le=\"+Inf\"", z),
                 cumulative);
        e.sample("smtpscreen_dnsbl_query_duration_seconds_sum", fmt::format("zone=\"{}\"", z), seconds(t.sum_ms));
        e.sample("smtpscreen_dnsbl_query_duration_seconds_count", fmt::format("zone=\"{}\"", z), cumulative);
    }

    e.single("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.",
             process.cpu_seconds);
    e.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
             process.resident_bytes);
    e.single("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
             process.virtual_bytes);
    e.single("process_open_fds", "gauge", "Open file descriptors.",
             process.open_fds);
    e.single("process_max_fds", "gauge", "The open files limit (RLIMIT_NOFILE).",
             process.max_fds);
    e.single("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.",
             fmt::format("{:.2f}", process.start_time_seconds));
    return e.take();
}

}  // namespace smtpscreen
