#pragma once
// What a run measured: per role, session counts, latency, final reply codes and errors.
// Every structure here has a fixed size whatever the number of sessions.
#include <array>
#include <cstdint>
#include <map>
#include <string_view>

#include "bench/role.h"

namespace smtpload {

// Log-linear histogram of microseconds (HdrHistogram's layout): 32 buckets per power
// of two, so a percentile is within about 3 % of the true value, for up to ~2^44 µs.
class LatencyHistogram {
public:
    void record(uint64_t micros);
    void merge(const LatencyHistogram& other);
    uint64_t count() const { return count_; }
    double percentile_ms(double p) const;  // p in [0, 100]
    double mean_ms() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) / 1000.0 : 0; }
    double max_ms() const { return static_cast<double>(max_) / 1000.0; }

private:
    static constexpr int kSubBits = 6;
    static constexpr int kSub = 1 << kSubBits;
    static constexpr int kBuckets = 40 * kSub;
    static size_t bucket_of(uint64_t v);
    static uint64_t value_of(size_t bucket);  // upper bound of the bucket

    std::array<uint64_t, kBuckets> buckets_{};
    uint64_t count_ = 0;
    uint64_t sum_ = 0;
    uint64_t max_ = 0;
};

enum class ErrorKind : uint8_t {
    Connect,   // socket, bind or connect failed (refused, no address/port left, ...)
    Timeout,   // --timeout passed, or the run's hard deadline came
    Reset,     // connection reset, or closed by the server mid-dialogue without a reply saying why
    Protocol,  // a reply that is not SMTP, or a code the dialogue did not allow
};
constexpr size_t kErrorKinds = 4;
std::string_view error_name(ErrorKind kind);

// Reply code 0 stands for "the session ended without any complete reply".
struct RoleStats {
    uint64_t sessions = 0;
    uint64_t ok = 0;  // the role's expected outcome (see README: "ok")
    uint64_t bytes_sent = 0;
    uint64_t tls_handshakes = 0;  // completed (starttls, tls)
    uint64_t tls_resumed = 0;     // of which the server resumed the offered session
    LatencyHistogram latency;
    std::map<int, uint64_t> replies;
    std::array<uint64_t, kErrorKinds> errors{};

    uint64_t error_total() const;
    void merge(const RoleStats& other);
};

struct RunStats {
    std::array<RoleStats, kRoleCount> roles;
    uint64_t source_retries = 0;  // connects retried from the next source address
    double last_end_s = 0;        // when the last session ended, from the run's start

    RoleStats total() const;
    void merge(const RunStats& other);
};

}  // namespace smtpload
