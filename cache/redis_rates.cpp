#include "cache/redis_rates.h"

#include <hiredis/hiredis.h>

#include <fmt/format.h>

#include <optional>
#include <utility>
#include <vector>

#include "cache/redis_cache.h"
#include "cache/redis_counts.h"

namespace smtpscreen {

namespace {

struct Counted {
    RateScope scope;
    RateLimit limit;
    RateKey key;
};

}  // namespace

std::string redis_rate_key(std::string_view prefix, const RateKey& key) {
    return fmt::format("{}{}{}", prefix, kRedisRateInfix, key.to_string());
}

void RedisConnectionRates::count(const Endpoint& client, const RateRules& rules, uint64_t now_ms, Done done) {
    if (!rules.on()) return done(RateVerdict{});
    std::vector<Counted> counted;
    if (rules.per_client.on()) counted.push_back({RateScope::Client, rules.per_client, RateKey::client(client)});
    if (rules.per_network.on()) {
        counted.push_back({RateScope::Network, rules.per_network, RateKey::network(client, rules.network_prefix)});
    }
    std::vector<RedisCommand> commands{{"MULTI"}};
    for (const auto& c : counted) {
        append_period_count(commands, redis_rate_key(redis_.settings().prefix, c.key), c.limit.period);
    }
    commands.push_back({"EXEC"});
    // Nothing of this object is captured: the cache may answer from its loop after the
    // session that asked is gone, never after the cache itself is.
    redis_.request(commands, [&fallback = fallback_, &outage = redis_.outage(), client, rules, now_ms,
                              counted = std::move(counted), done = std::move(done)](const redisReply* reply) {
        if (reply == nullptr) return fallback.count(client, rules, now_ms, done);
        if (auto why = period_counts_error(*reply, counted.size())) {
            outage.refused(RedisOutage::Refused::RateCounts, *why);
            return fallback.count(client, rules, now_ms, done);
        }
        outage.accepted(RedisOutage::Refused::RateCounts);
        RateVerdict verdict;
        for (size_t i = 0; i < counted.size(); ++i) {
            const long long seen = period_count(*reply, i);
            const Counted& c = counted[i];
            if (seen <= static_cast<long long>(c.limit.count)) continue;
            verdict.refused = c.scope;
            verdict.limit = c.limit;
            verdict.key = c.key;
            // Exactly one connection of all the instances' is the first one over: that
            // one logs, once per key and period for the whole site.
            verdict.first = seen == static_cast<long long>(c.limit.count) + 1;
            break;
        }
        done(verdict);
    });
}

}  // namespace smtpscreen
