#include "cache/redis_failures.h"

#include <utility>
#include <vector>

#include "cache/redis_cache.h"
#include "cache/redis_counts.h"

namespace smtpscreen {

std::string redis_failure_key(std::string_view prefix, std::string_view client_ip) {
    std::string key(prefix);
    key += kRedisFailureInfix;
    key += client_ip;
    return key;
}

void RedisFailureCounts::fail(const Endpoint& client, const BanRules& rules, uint64_t now_ms, Done done) {
    if (!rules.on()) return done(std::nullopt);
    std::vector<RedisCommand> commands{{"MULTI"}};
    append_period_count(commands, redis_failure_key(redis_.settings().prefix, client.ip()), rules.after.period);
    commands.push_back({"EXEC"});
    // Nothing of this object is captured: the cache may answer from its loop after the
    // session that failed is gone, never after the cache itself is.
    redis_.request(commands, [&fallback = fallback_, &outage = redis_.outage(), client, rules, now_ms,
                              done = std::move(done)](const redisReply* reply) {
        if (reply == nullptr) return fallback.fail(client, rules, now_ms, done);
        if (auto why = period_counts_error(*reply, 1)) {
            outage.refused(RedisOutage::Refused::FailureCounts, *why);
            return fallback.fail(client, rules, now_ms, done);
        }
        outage.accepted(RedisOutage::Refused::FailureCounts);
        const long long seen = period_count(*reply, 0);
        if (seen <= 0 || seen % rules.after.count != 0) return done(std::nullopt);
        done(rules.after.count);
    });
}

}  // namespace smtpscreen
