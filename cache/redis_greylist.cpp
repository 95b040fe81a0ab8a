#include "cache/redis_greylist.h"

#include <hiredis/hiredis.h>

#include <charconv>

#include "cache/redis_cache.h"

namespace smtpscreen {

namespace {

std::string_view reply_text(const redisReply& reply) {
    return reply.str != nullptr ? std::string_view(reply.str, reply.len) : std::string_view("(no text)");
}

std::optional<int64_t> parse_millis(std::string_view v) {
    int64_t ms = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
    if (ec != std::errc() || end != v.data() + v.size() || ms < 0) return std::nullopt;
    return ms;
}

// EXEC's reply to the write: what is wrong with it, if anything.
std::optional<std::string> write_error(const redisReply& reply) {
    if (reply.type == REDIS_REPLY_ERROR) return std::string(reply_text(reply));
    if (reply.type == REDIS_REPLY_NIL) return std::string("the transaction was aborted");
    if (reply.type != REDIS_REPLY_ARRAY) return std::string("EXEC answered something else than the replies");
    for (size_t i = 0; i < reply.elements; ++i) {
        if (reply.element[i]->type == REDIS_REPLY_ERROR) return std::string(reply_text(*reply.element[i]));
    }
    return std::nullopt;
}

}  // namespace

std::string redis_greylist_key(std::string_view prefix, std::string_view triplet) {
    std::string key(prefix);
    key += kRedisGreylistInfix;
    key += triplet;
    return key;
}

std::optional<GreylistEntry> decode_redis_greylist(
    const std::vector<std::pair<std::string_view, std::string_view>>& fields) {
    std::optional<int64_t> first_seen;
    std::optional<int64_t> expires;
    bool passed = false;
    for (const auto& [name, value] : fields) {
        if (name == "first_seen") first_seen = parse_millis(value);
        else if (name == "expires") expires = parse_millis(value);
        else if (name == "passed") passed = value == "1";
    }
    if (!first_seen || !expires) return std::nullopt;
    return GreylistEntry{*first_seen, passed, *expires};
}

std::vector<RedisCommand> redis_greylist_store_commands(std::string_view key, const GreylistEntry& entry) {
    const std::string expires = std::to_string(entry.expires_ms);
    return {{"MULTI"},
            {"HSET", std::string(key), "first_seen", std::to_string(entry.first_seen_ms), "passed",
             entry.passed ? "1" : "0", "expires", expires},
            {"PEXPIREAT", std::string(key), expires},
            {"EXEC"}};
}

void RedisGreylist::attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms, Done done) {
    std::string key = redis_greylist_key(redis_.settings().prefix, triplet);
    // Nothing of this object is captured: the cache may answer from its loop after the
    // session that asked is gone, never after the cache itself is.
    redis_.request({{"HGETALL", key}}, [&redis = redis_, key, rules, now_ms,
                                        done = std::move(done)](const redisReply* reply) {
        RedisOutage& outage = redis.outage();
        if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
            const std::string why = reply != nullptr ? std::string(reply_text(*reply))
                                    : redis.ready()  ? std::string("too many commands in flight")
                                                     : std::string("no connection, or no reply in time");
            outage.refused(RedisOutage::Refused::Greylist, why);
            return done(GreylistOutcome::Unanswered);
        }
        outage.accepted(RedisOutage::Refused::Greylist);
        std::vector<std::pair<std::string_view, std::string_view>> fields;
        if (reply->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i + 1 < reply->elements; i += 2) {
                const redisReply* name = reply->element[i];
                const redisReply* value = reply->element[i + 1];
                if (name->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING) continue;
                fields.emplace_back(std::string_view(name->str, name->len), std::string_view(value->str, value->len));
            }
        }
        const GreylistStep step = greylist_attempt(decode_redis_greylist(fields), rules, now_ms);
        // An early retry changes nothing: the wait counts from the first attempt.
        if (step.outcome != GreylistOutcome::TooEarly) {
            redis.request(redis_greylist_store_commands(key, step.entry), [&outage](const redisReply* written) {
                if (written == nullptr) return;  // the cache logs an outage
                if (auto why = write_error(*written)) outage.refused(RedisOutage::Refused::Stores, *why);
                else outage.accepted(RedisOutage::Refused::Stores);
            });
        }
        done(step.outcome);
    });
}

}  // namespace smtpscreen
