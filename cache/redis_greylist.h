#pragma once
// Greylisting's triplets in the Redis of cache.backend = redis, so that every instance
// sharing it greylists together: a triplet first tried on one instance passes when it
// is retried on another (README, "Redis"; smtpscreen.ini(5), REDIS RECORDS). One per
// event loop, on that loop's Redis connection (RedisLoopCache).
//
// A triplet is the hash <prefix>grey:<triplet> with the fields of its GreylistEntry,
// first_seen, passed (0 or 1) and expires (Unix milliseconds), and a Redis expiry
// (PEXPIREAT) at `expires`, so Redis drops the triplets nobody retried and the ones
// that were not used for greylist.ttl; no table size applies.
//
// An RCPT waits for one round trip, HGETALL; greylist_attempt (edge/greylist.h) decides
// from what it read, and what the triplet keeps from then on is written behind it
// (MULTI, HSET, PEXPIREAT, EXEC), waited for by nobody. Two instances trying one
// triplet in the same instant both read it before either writes: the worst that does
// is that the later write's first attempt counts, a wait shorter by that instant.
//
// When Redis cannot answer within cache.redis_timeout (down, frozen, too much in
// flight, an error reply), the RCPT is let through without greylisting
// (GreylistOutcome::Unanswered), as postgrey's users expect when its database fails:
// greylisting delays mail, and must never keep it out because Redis is away. No
// greylist pass is cached for such a client, so it is greylisted once Redis is back.
// The first such RCPT of an outage logs it, and the first answer after it says so
// (cache/redis_outage.h).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/redis_record.h"
#include "edge/greylist.h"

namespace smtpscreen {

class RedisLoopCache;

inline constexpr std::string_view kRedisGreylistInfix = "grey:";
std::string redis_greylist_key(std::string_view prefix, std::string_view triplet);

// HGETALL's field/value pairs back to an entry; nullopt for no key, or one without a
// whole number of milliseconds in first_seen and expires (then the triplet is new).
std::optional<GreylistEntry> decode_redis_greylist(
    const std::vector<std::pair<std::string_view, std::string_view>>& fields);
// MULTI, HSET of the three fields, PEXPIREAT at entry.expires_ms, EXEC.
std::vector<RedisCommand> redis_greylist_store_commands(std::string_view key, const GreylistEntry& entry);

class RedisGreylist final : public GreylistStore {
public:
    // `redis` must outlive this object; it is used on `redis`'s loop only.
    explicit RedisGreylist(RedisLoopCache& redis) : redis_(redis) {}
    void attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms, Done done) override;

private:
    RedisLoopCache& redis_;
};

}  // namespace smtpscreen
