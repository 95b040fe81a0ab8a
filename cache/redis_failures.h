#pragma once
// The failures toward ban.after counted in the Redis of cache.backend = redis, so that
// a client failing on several instances sharing it is banned after N failures in all
// (README, "Bans"; smtpscreen.ini(5), REDIS RECORDS). One per event loop, on that
// loop's Redis connection (RedisLoopCache), as the rate counts (cache/redis_rates.h).
//
// A failure is one round trip: MULTI, INCR <prefix>fail:<address>, PEXPIRE of ban.after's
// period with NX, EXEC (cache/redis_counts.h): the period starts at the client's first
// failure and Redis ends it. Every N-th count of the period bans: exactly one failure of
// all the instances' makes each ban, and the next ban takes N more, as this process's
// table (edge/failure_counts.h) forgets a client at its N-th.
//
// When Redis cannot answer within cache.redis_timeout (down, frozen, too much in
// flight, an error reply), the failure is counted in this process's table instead; the
// outage is logged once, with the cache's (cache/redis_outage.h).
#include <string>
#include <string_view>

#include "edge/failure_counts.h"

namespace smtpscreen {

class RedisLoopCache;

// <prefix>fail:<client address>: a string holding the count, which Redis expires at the
// end of the period.
inline constexpr std::string_view kRedisFailureInfix = "fail:";
std::string redis_failure_key(std::string_view prefix, std::string_view client_ip);

class RedisFailureCounts final : public FailureCounter {
public:
    // Both must outlive this object; it is used on `redis`'s loop only.
    RedisFailureCounts(RedisLoopCache& redis, FailureCounts& fallback) : redis_(redis), fallback_(fallback) {}

    void fail(const Endpoint& client, const BanRules& rules, uint64_t now_ms, Done done) override;

private:
    RedisLoopCache& redis_;
    FailureCounts& fallback_;
};

}  // namespace smtpscreen
