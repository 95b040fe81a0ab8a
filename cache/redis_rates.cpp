#include "cache/redis_rates.h"

#include <hiredis/hiredis.h>

#include <fmt/format.h>

#include <optional>
#include <utility>
#include <vector>

#include "cache/redis_cache.h"

namespace smtpscreen {

namespace {

struct Counted {
    RateScope scope;
    RateLimit limit;
    RateKey key;
};

std::string_view reply_text(const redisReply& reply) {
    return reply.str != nullptr ? std::string_view(reply.str, reply.len) : std::string_view("(no text)");
}

// EXEC's reply: INCR's count and PEXPIRE's 0 or 1 for each counted key, in order. What
// is wrong with it otherwise.
std::optional<std::string> bad_reply(const redisReply& reply, size_t keys) {
    if (reply.type == REDIS_REPLY_ERROR) return std::string(reply_text(reply));
    if (reply.type == REDIS_REPLY_NIL) return std::string("the transaction was aborted");
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements != keys * 2) {
        return std::string("EXEC answered something else than a count and an expiry per key");
    }
    for (size_t i = 0; i < reply.elements; ++i) {
        const redisReply& r = *reply.element[i];
        if (r.type == REDIS_REPLY_ERROR) return std::string(reply_text(r));
        if (r.type != REDIS_REPLY_INTEGER) return std::string("INCR or PEXPIRE answered something else than a number");
    }
    return std::nullopt;
}

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
        std::string key = redis_rate_key(redis_.settings().prefix, c.key);
        commands.push_back({"INCR", key});
        commands.push_back({"PEXPIRE", std::move(key), std::to_string(c.limit.period.count()), "NX"});
    }
    commands.push_back({"EXEC"});
    // Nothing of this object is captured: the cache may answer from its loop after the
    // session that asked is gone, never after the cache itself is.
    redis_.request(commands, [&fallback = fallback_, &outage = redis_.outage(), client, rules, now_ms,
                              counted = std::move(counted), done = std::move(done)](const redisReply* reply) {
        if (reply == nullptr) return fallback.count(client, rules, now_ms, done);
        if (auto why = bad_reply(*reply, counted.size())) {
            outage.refused(RedisOutage::Refused::RateCounts, *why);
            return fallback.count(client, rules, now_ms, done);
        }
        outage.accepted(RedisOutage::Refused::RateCounts);
        RateVerdict verdict;
        for (size_t i = 0; i < counted.size(); ++i) {
            const long long seen = reply->element[2 * i]->integer;
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
