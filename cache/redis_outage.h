#pragma once
// The log lines of Redis outages (README, "Redis"): one when Redis becomes unreachable
// and one when it is back, for the whole process, however many event loops (each with
// its own connection) notice it and however many sessions carry on as cache misses
// meanwhile; the same, once each way, for a Redis that is reachable but refuses
// lookups, stores, rate or failure counts with error replies, and for greylisting without an
// answer. Shared by the loops' caches, so it takes a lock, on changes only: a lookup
// or store that went well looks at one atomic flag.
#include <array>
#include <atomic>
#include <mutex>
#include <string>

#include "core/log.h"

namespace smtpscreen {

class RedisOutage {
public:
    enum class Refused { Lookups, Stores, RateCounts, Greylist, FailureCounts };

    // where: the server as cache.redis names it.
    RedisOutage(std::string where, Logger& log) : where_(std::move(where)), log_(log) {}

    // A loop lost Redis; the first one to lose it says why.
    void loop_down(const std::string& why);
    // A loop has Redis again; the last one to get it back says so.
    void loop_up();
    // Redis answered a lookup, a store, a rate or a failure count with an error (LOADING, out of
    // memory, a read-only replica, an ACL): said once until one of them succeeds again,
    // on any loop. Greylisting says so for any RCPT it lets through unanswered, an
    // error reply or none in time (cache/redis_greylist.h).
    void refused(Refused what, const std::string& why);
    void accepted(Refused what);

private:
    const std::string where_;
    Logger& log_;
    std::mutex mutex_;
    int loops_down_ = 0;                     // guarded by mutex_
    std::array<std::atomic<bool>, 5> refusing_{};  // written under mutex_
};

}  // namespace smtpscreen
