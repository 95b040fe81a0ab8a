#pragma once
// Counters the worker threads update and the main thread reads for the progress line,
// and the two things every worker must agree on: how many sessions may still start,
// and whether the user asked to stop.
#include <array>
#include <atomic>
#include <cstdint>

#include "bench/stats.h"

namespace smtpload {

struct Progress {
    explicit Progress(int64_t sessions) : budget(sessions) {}

    // Takes one session from the --sessions budget; false once it is spent.
    bool take_session() { return budget.fetch_sub(1, std::memory_order_relaxed) > 0; }

    std::atomic<int64_t> budget;
    std::atomic<uint64_t> done{0};
    std::atomic<uint64_t> open{0};  // connected and not yet ended
    std::array<std::atomic<uint64_t>, kErrorKinds> errors{};
    std::atomic<bool> stop{false};  // SIGINT/SIGTERM: end the run as at --duration
};

}  // namespace smtpload
