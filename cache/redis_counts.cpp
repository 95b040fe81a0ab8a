#include "cache/redis_counts.h"

#include <string_view>
#include <utility>

namespace smtpscreen {

void append_period_count(std::vector<RedisCommand>& commands, std::string key, Millis period) {
    commands.push_back({"INCR", key});
    commands.push_back({"PEXPIRE", std::move(key), std::to_string(period.count()), "NX"});
}

std::optional<std::string> period_counts_error(const redisReply& reply, size_t keys) {
    auto text = [](const redisReply& r) {
        return r.str != nullptr ? std::string(r.str, r.len) : std::string("(no text)");
    };
    if (reply.type == REDIS_REPLY_ERROR) return text(reply);
    if (reply.type == REDIS_REPLY_NIL) return std::string("the transaction was aborted");
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements != keys * 2) {
        return std::string("EXEC answered something else than a count and an expiry per key");
    }
    for (size_t i = 0; i < reply.elements; ++i) {
        const redisReply& r = *reply.element[i];
        if (r.type == REDIS_REPLY_ERROR) return text(r);
        if (r.type != REDIS_REPLY_INTEGER) return std::string("INCR or PEXPIRE answered something else than a number");
    }
    return std::nullopt;
}

long long period_count(const redisReply& reply, size_t i) { return reply.element[2 * i]->integer; }

}  // namespace smtpscreen
