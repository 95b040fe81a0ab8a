#pragma once
// limits.per_client_rate and limits.per_network_rate counted in the Redis of
// cache.backend = redis, so that every instance sharing it counts a client together
// (README, "Redis"; smtpscreen.ini(5), REDIS RECORDS). One per event loop, on that
// loop's Redis connection (RedisLoopCache).
//
// A connection is one round trip: MULTI, then for each limit that is on an INCR of its
// counter and a PEXPIRE of the limit's period with NX, then EXEC. NX sets the expiry
// only on a counter that has none, the one INCR has just created, so a period starts
// at a key's first connection and lasts its period, as in this process's table
// (edge/rate_table.h); the transaction keeps a counter from ever living without one.
//
// When Redis cannot answer within cache.redis_timeout (down, frozen, too much in
// flight, an error reply), the connection is counted in this process's table instead:
// a client is never refused because Redis is away, and never waits longer than the
// timeout. The outage is logged once, with the cache's (cache/redis_outage.h).
#include <string>
#include <string_view>

#include "edge/connection_rates.h"

namespace smtpscreen {

class RedisLoopCache;

// <prefix>rate:<client address> or <prefix>rate:<network>/<prefix length>: a string
// holding the count, which Redis expires at the end of the period.
inline constexpr std::string_view kRedisRateInfix = "rate:";
std::string redis_rate_key(std::string_view prefix, const RateKey& key);

class RedisConnectionRates final : public ConnectionRates {
public:
    // Both must outlive this object; it is used on `redis`'s loop only.
    RedisConnectionRates(RedisLoopCache& redis, ConnectionRates& fallback) : redis_(redis), fallback_(fallback) {}

    void count(const Endpoint& client, const RateRules& rules, uint64_t now_ms, Done done) override;
    size_t keys_in_memory() const override { return fallback_.keys_in_memory(); }

private:
    RedisLoopCache& redis_;
    ConnectionRates& fallback_;
};

}  // namespace smtpscreen
