#include "bench/stats.h"

#include <algorithm>
#include <bit>

namespace smtpload {

size_t LatencyHistogram::bucket_of(uint64_t v) {
    if (v < kSub) return static_cast<size_t>(v);
    int msb = 63 - std::countl_zero(v);  // >= kSubBits
    int shift = msb - kSubBits + 1;
    size_t b = static_cast<size_t>(shift) * kSub + static_cast<size_t>(v >> shift);
    // v >> shift is in [kSub/2, kSub): the lower half of each row is never used, which
    // wastes a little memory and keeps the arithmetic obvious.
    return std::min<size_t>(b, kBuckets - 1);
}

uint64_t LatencyHistogram::value_of(size_t bucket) {
    size_t shift = bucket / kSub;
    uint64_t sub = bucket % kSub;
    if (shift == 0) return sub;
    return ((sub + 1) << shift) - 1;
}

void LatencyHistogram::record(uint64_t micros) {
    ++buckets_[bucket_of(micros)];
    ++count_;
    sum_ += micros;
    max_ = std::max(max_, micros);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
}

double LatencyHistogram::percentile_ms(double p) const {
    if (count_ == 0) return 0;
    // The smallest value that at least p % of the samples do not exceed.
    uint64_t rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(count_) + 0.5);
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
        seen += buckets_[i];
        if (seen >= rank) return static_cast<double>(std::min(value_of(i), max_)) / 1000.0;
    }
    return max_ms();
}

std::string_view error_name(ErrorKind kind) {
    switch (kind) {
    case ErrorKind::Connect: return "connect";
    case ErrorKind::Timeout: return "timeout";
    case ErrorKind::Reset: return "reset";
    case ErrorKind::Protocol: return "protocol";
    }
    return "?";
}

uint64_t RoleStats::error_total() const {
    uint64_t n = 0;
    for (uint64_t e : errors) n += e;
    return n;
}

void RoleStats::merge(const RoleStats& other) {
    sessions += other.sessions;
    ok += other.ok;
    bytes_sent += other.bytes_sent;
    tls_handshakes += other.tls_handshakes;
    tls_resumed += other.tls_resumed;
    latency.merge(other.latency);
    for (const auto& [code, n] : other.replies) replies[code] += n;
    for (size_t i = 0; i < errors.size(); ++i) errors[i] += other.errors[i];
}

RoleStats RunStats::total() const {
    RoleStats t;
    for (const RoleStats& r : roles) t.merge(r);
    return t;
}

void RunStats::merge(const RunStats& other) {
    for (size_t i = 0; i < roles.size(); ++i) roles[i].merge(other.roles[i]);
    source_retries += other.source_retries;
    last_end_s = std::max(last_end_s, other.last_end_s);
}

}  // namespace smtpload
