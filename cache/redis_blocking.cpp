#include "cache/redis_blocking.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <fmt/format.h>

#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/ban_record.h"
#include "cache/redis_failures.h"
#include "cache/redis_greylist.h"
#include "cache/redis_rates.h"
#include "cache/redis_record.h"

namespace smtpscreen {

namespace {

struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

timeval to_timeval(Millis t) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(t.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
    return tv;
}

std::string_view text_of(const redisReply& r) {
    return r.str != nullptr ? std::string_view(r.str, r.len) : std::string_view();
}

// One blocking connection, set up as the daemon sets up its own (AUTH, SELECT, PING).
class BlockingRedis {
public:
    BlockingRedis(const RedisSettings& settings, Millis timeout) : where_(settings.address) {
        const timeval tv = to_timeval(timeout);
        context_.reset(settings.unix_socket() ? redisConnectUnixWithTimeout(settings.address.c_str(), tv)
                                              : redisConnectWithTimeout(settings.host().c_str(), settings.port(), tv));
        if (!context_) throw std::runtime_error(fmt::format("Redis at {}: out of memory", where_));
        if (context_->err != 0) {
            throw std::runtime_error(fmt::format("cannot reach Redis at {} (cache.redis): {} (is redis-server "
                                                 "running and listening there?)",
                                                 where_, context_->errstr));
        }
        redisSetTimeout(context_.get(), tv);
        for (const auto& command : redis_hello_commands(settings.password, settings.db)) run(command);
    }

    // The reply; an error reply or a failure to get one throws.
    ReplyPtr run(const RedisCommand& command) {
        std::vector<const char*> argv;
        std::vector<size_t> lengths;
        for (const auto& arg : command) {
            argv.push_back(arg.data());
            lengths.push_back(arg.size());
        }
        ReplyPtr reply(static_cast<redisReply*>(
            redisCommandArgv(context_.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
        if (!reply) {
            throw std::runtime_error(fmt::format("Redis at {} did not answer {}: {}", where_, command.front(),
                                                 context_->errstr));
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            // The password never appears: AUTH's own argument is not repeated.
            throw std::runtime_error(fmt::format("Redis at {} refused {}: {} (check cache.redis_password and "
                                                 "cache.redis_db)",
                                                 where_, command.front(), text_of(*reply)));
        }
        return reply;
    }

private:
    std::string where_;
    std::unique_ptr<redisContext, ContextFree> context_;
};

class RedisToolCache final : public VerdictCache, public BanStore {
public:
    RedisToolCache(const RedisSettings& settings, Millis timeout)
        : redis_(settings, timeout), prefix_(settings.prefix) {}

    void lookup(const std::string& client_ip, LookupDone done) override { done(read(key(client_ip))); }

    void store(const std::string& client_ip, const TestResults& results) override {
        for (const auto& command : redis_store_commands(key(client_ip), results)) redis_.run(command);
    }

    void for_each(const RecordVisitor& visit) override {
        for (const auto& k : keys()) {
            if (is_ban_key(std::string_view(k).substr(prefix_.size()))) continue;
            if (auto record = decode_redis_record(fields(k))) visit(k.substr(prefix_.size()), *record);
        }
    }

    void lookup_ban(const std::string& client_ip, BanFound done) override {
        done(decode_redis_ban(fields(redis_ban_key(prefix_, client_ip))));
    }

    void store_ban(const std::string& client_ip, const Ban& ban) override {
        for (const auto& command : redis_ban_store_commands(redis_ban_key(prefix_, client_ip), ban)) redis_.run(command);
    }

    void for_each_ban(const BanVisitor& visit) override {
        const size_t skip = prefix_.size() + kBanKeyPrefix.size();
        for (const auto& k : keys()) {
            if (!is_ban_key(std::string_view(k).substr(prefix_.size()))) continue;
            if (auto ban = decode_redis_ban(fields(k))) visit(k.substr(skip), *ban);
        }
    }

    bool erase_ban(const std::string& client_ip) override {
        return redis_.run({"DEL", redis_ban_key(prefix_, client_ip)})->integer == 1;
    }

    bool erase(const std::string& client_ip) override {
        return redis_.run({"DEL", key(client_ip)})->integer == 1;
    }

    size_t erase_all() override {
        const auto all = keys();
        size_t deleted = 0;
        constexpr size_t kBatch = 500;
        for (auto it = all.begin(); it != all.end();) {
            RedisCommand del{"DEL"};
            for (size_t n = 0; n < kBatch && it != all.end(); ++n, ++it) del.push_back(*it);
            deleted += static_cast<size_t>(redis_.run(del)->integer);
        }
        return deleted;
    }

private:
    std::string key(const std::string& client_ip) const { return redis_record_key(prefix_, client_ip); }

    std::optional<TestResults> read(const std::string& k) { return decode_redis_record(fields(k)); }

    // The hash at k as field/value pairs, owned (the reply is freed here).
    std::vector<std::pair<std::string_view, std::string_view>> fields(const std::string& k) {
        auto reply = redis_.run({"HGETALL", k});
        held_.clear();
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            held_.emplace_back(text_of(*reply->element[i]), text_of(*reply->element[i + 1]));
        }
        std::vector<std::pair<std::string_view, std::string_view>> out;
        for (const auto& [name, value] : held_) out.emplace_back(name, value);
        return out;
    }

    // Every client's key with the prefix, sorted (SCAN may return a key twice, in any
    // order). The rate and failure counts and greylisting's triplets share the prefix and are no
    // records: listing, removing one or all records leaves them alone.
    std::set<std::string> keys() {
        std::set<std::string> out;
        std::string cursor = "0";
        const std::string pattern = redis_prefix_pattern(prefix_);
        do {
            auto reply = redis_.run({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
            if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
                throw std::runtime_error("Redis answered SCAN with something else than a cursor and keys");
            }
            cursor = std::string(text_of(*reply->element[0]));
            const redisReply& batch = *reply->element[1];
            for (size_t i = 0; i < batch.elements; ++i) {
                const std::string_view key = text_of(*batch.element[i]);
                const std::string_view rest = key.substr(prefix_.size());
                if (rest.substr(0, kRedisRateInfix.size()) == kRedisRateInfix) continue;
                if (rest.substr(0, kRedisFailureInfix.size()) == kRedisFailureInfix) continue;
                if (rest.substr(0, kRedisGreylistInfix.size()) == kRedisGreylistInfix) continue;
                out.emplace(key);
            }
        } while (cursor != "0");
        return out;
    }

    BlockingRedis redis_;
    std::string prefix_;
    std::vector<std::pair<std::string, std::string>> held_;  // what fields() last returned views into
};

}  // namespace

CacheStores open_redis_cache_blocking(const RedisSettings& settings, Millis timeout) {
    auto cache = std::make_shared<RedisToolCache>(settings, timeout);
    return {cache, cache};
}

std::optional<std::string> probe_redis(const RedisSettings& settings, Millis timeout) {
    try {
        BlockingRedis redis(settings, timeout);
        return std::nullopt;
    } catch (const std::exception& e) {
        return std::string(e.what());
    }
}

}  // namespace smtpscreen
