#pragma once
// cache.cleanup_interval: every interval, one full pass over an lmdb cache that removes
// the records whose passes have all expired, and one log line in postscreen's words
// ("cache lmdb:PATH full cleanup: retained=N dropped=M entries"). The pass is made of
// bounded steps (kLmdbSweepBatch records, one write transaction each) with a return to
// the loop between them, so that no step holds LMDB's write lock long enough to delay
// a session's store. It runs on the main thread's signal loop, which serves no session.
#include <uv.h>

#include <memory>
#include <optional>
#include <string>

#include "cache/verdict_cache.h"
#include "core/duration.h"
#include "core/log.h"
#include "core/uv_handle.h"

namespace smtpscreen {

class CacheCleanup {
public:
    // name: how the log line names the cache, "lmdb:/var/lib/smtpscreen/smtpscreen.cache".
    // interval 0: never.
    CacheCleanup(uv_loop_t* loop, std::shared_ptr<VerdictCache> cache, std::string name, Millis interval,
                 Logger& log);
    CacheCleanup(const CacheCleanup&) = delete;
    CacheCleanup& operator=(const CacheCleanup&) = delete;

    // After a reload: the next cleanup comes one new interval from now (a pass in
    // progress finishes first); 0 stops them.
    void set_interval(Millis interval);
    // Before the loop ends.
    void stop();

private:
    void on_timer();
    void arm(uint64_t after_ms);

    std::shared_ptr<VerdictCache> cache_;
    std::string name_;
    Millis interval_;
    Logger& log_;
    UvHandle<uv_timer_t> timer_;
    std::optional<VerdictCache::Cleanup> running_;
};

}  // namespace smtpscreen
