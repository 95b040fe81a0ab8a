#pragma once
// The log lines of Redis outages (README, "Redis"): one when Redis becomes unreachable
// and one when it is back, for the whole process, however many event loops (each with
// its own connection) notice it and however many sessions carry on as cache misses
// meanwhile. Shared by the loops' caches, so it takes a lock; it is called on state
// changes only (a successful store looks at one atomic flag).
#include <atomic>
#include <mutex>
#include <string>

#include "core/log.h"

namespace smtpscreen {

class RedisOutage {
public:
    // where: the server as cache.redis names it.
    RedisOutage(std::string where, Logger& log) : where_(std::move(where)), log_(log) {}

    // A loop lost Redis; the first one to lose it says why.
    void loop_down(const std::string& why);
    // A loop has Redis again; the last one to get it back says so.
    void loop_up();
    // Redis answered a store with an error (out of memory, a read-only replica): said
    // once until a store succeeds again, on any loop.
    void store_refused(const std::string& why);
    void store_accepted();

private:
    const std::string where_;
    Logger& log_;
    std::mutex mutex_;
    int loops_down_ = 0;       // guarded by mutex_
    std::atomic<bool> stores_refused_{false};  // written under mutex_
};

}  // namespace smtpscreen
