#include "cache/redis_cache.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/ban_record.h"
#include "cache/redis_greylist.h"
#include "cache/redis_failures.h"
#include "cache/redis_rates.h"
#include "cache/redis_record.h"

namespace smtpscreen {

namespace {

std::string_view reply_text(const redisReply& reply) {
    return reply.str != nullptr ? std::string_view(reply.str, reply.len) : std::string_view("(no text)");
}

// A key that holds something else than a hash is that key's problem, not Redis's.
bool wrong_type(const redisReply& reply) {
    return reply_text(reply).substr(0, 9) == "WRONGTYPE";
}

// EXEC's reply: an array of the queued commands' replies, or nil when the transaction
// was aborted.
std::optional<std::string> transaction_error(const redisReply& reply) {
    if (reply.type == REDIS_REPLY_NIL) return std::string("the transaction was aborted");
    for (size_t i = 0; i < reply.elements; ++i) {
        if (reply.element[i]->type == REDIS_REPLY_ERROR) return std::string(reply_text(*reply.element[i]));
    }
    return std::nullopt;
}

// HGETALL's reply as field/value pairs (none for a missing key).
std::vector<std::pair<std::string_view, std::string_view>> hash_fields(const redisReply& reply) {
    std::vector<std::pair<std::string_view, std::string_view>> fields;
    if (reply.type != REDIS_REPLY_ARRAY) return fields;
    for (size_t i = 0; i + 1 < reply.elements; i += 2) {
        const redisReply* name = reply.element[i];
        const redisReply* value = reply.element[i + 1];
        if (name->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING) continue;
        fields.emplace_back(std::string_view(name->str, name->len), std::string_view(value->str, value->len));
    }
    return fields;
}

}  // namespace

RedisLoopCache::RedisLoopCache(uv_loop_t* loop, RedisSettings settings, std::shared_ptr<RedisOutage> outage)
    : loop_(loop), settings_(std::move(settings)), outage_(std::move(outage)), retry_delay_(settings_.first_retry) {
    deadline_timer_ = UvHandle<uv_timer_t>([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this);
    retry_timer_ = UvHandle<uv_timer_t>([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this);
    connect();
}

// Nothing waiting is answered any more: the loop (and the sessions on it) is going.
RedisLoopCache::~RedisLoopCache() = default;

void RedisLoopCache::connect() {
    ++counters_.connects;
    ready_ = false;
    std::string why;
    connection_ = RedisConnection::open(loop_, settings_, *this, why);
    if (!connection_) return fail(why);
    // Queued behind these, commands sent before the PONG still reach a set-up
    // connection; but only a first connection takes them (usable()).
    for (const auto& command : redis_hello_commands(settings_.password, settings_.db)) {
        send(command, command.front() == "PING" ? Kind::Ping : Kind::Hello, {});
    }
}

uint64_t RedisLoopCache::send(const RedisCommand& command, Kind kind, LookupDone&& done, ReplyDone&& answer) {
    const uint64_t id = next_id_++;
    if (!connection_->send(command, id)) return 0;
    waiting_.push_back({id, uv_now(loop_) + static_cast<uint64_t>(settings_.timeout.count()), kind, std::move(done),
                        std::move(answer)});
    if (!uv_is_active(deadline_timer_.handle())) {
        uv_timer_start(
            deadline_timer_.get(),
            [](uv_timer_t* t) {
                if (auto* self = static_cast<RedisLoopCache*>(t->data)) self->on_deadline();
            },
            static_cast<uint64_t>(settings_.timeout.count()), 0);
    }
    return id;
}

void RedisLoopCache::lookup(const std::string& client_ip, LookupDone done) {
    if (!usable() || waiting_.size() >= settings_.max_in_flight) {
        ++counters_.unavailable;
        return done(std::nullopt);
    }
    ++counters_.lookups;
    // send() takes `done` only when it queued the command.
    if (send({"HGETALL", redis_record_key(settings_.prefix, client_ip)}, Kind::Lookup, std::move(done)) == 0) {
        ++counters_.unavailable;
        done(std::nullopt);
    }
}

void RedisLoopCache::store(const std::string& client_ip, const TestResults& results) {
    send_store(redis_store_commands(redis_record_key(settings_.prefix, client_ip), results));
}

void RedisLoopCache::lookup_ban(const std::string& client_ip, BanFound done) {
    request({{"HGETALL", redis_ban_key(settings_.prefix, client_ip)}}, [this, done = std::move(done)](const redisReply* reply) {
        if (reply == nullptr) return done(std::nullopt);
        if (reply->type == REDIS_REPLY_ERROR) {
            if (!wrong_type(*reply)) outage_->refused(RedisOutage::Refused::Lookups, std::string(reply_text(*reply)));
            return done(std::nullopt);
        }
        outage_->accepted(RedisOutage::Refused::Lookups);
        done(decode_redis_ban(hash_fields(*reply)));
    });
}

void RedisLoopCache::store_ban(const std::string& client_ip, const Ban& ban) {
    send_store(redis_ban_store_commands(redis_ban_key(settings_.prefix, client_ip), ban));
}

bool RedisLoopCache::send_store(const std::vector<RedisCommand>& commands) {
    if (!usable() || waiting_.size() >= settings_.max_in_flight) {
        ++counters_.stores_dropped;
        return false;
    }
    // Only the last command's reply (EXEC's, or a lone DEL's) is waited for: it tells
    // how the whole store went.
    for (size_t i = 0; i + 1 < commands.size(); ++i) {
        if (!connection_->send(commands[i], 0)) {
            ++counters_.stores_dropped;
            return false;
        }
    }
    if (send(commands.back(), Kind::Store, {}) == 0) {
        ++counters_.stores_dropped;
        return false;
    }
    ++counters_.stores;
    return true;
}

void RedisLoopCache::request(const std::vector<RedisCommand>& commands, ReplyDone done) {
    if (commands.empty() || !usable() || waiting_.size() >= settings_.max_in_flight) {
        ++counters_.unavailable;
        return done(nullptr);
    }
    for (size_t i = 0; i + 1 < commands.size(); ++i) {
        if (!connection_->send(commands[i], 0)) {
            ++counters_.unavailable;
            return done(nullptr);
        }
    }
    // send() takes `done` only when it queued the command.
    if (send(commands.back(), Kind::Request, {}, std::move(done)) == 0) {
        ++counters_.unavailable;
        done(nullptr);
    }
}

std::unique_ptr<ConnectionRates> RedisLoopCache::loop_rates(ConnectionRates& fallback) {
    return std::make_unique<RedisConnectionRates>(*this, fallback);
}

std::unique_ptr<FailureCounter> RedisLoopCache::loop_failures(FailureCounts& fallback) {
    return std::make_unique<RedisFailureCounts>(*this, fallback);
}

std::unique_ptr<GreylistStore> RedisLoopCache::loop_greylist() {
    return std::make_unique<RedisGreylist>(*this);
}

void RedisLoopCache::on_reply(uint64_t id, const redisReply& reply) {
    // Redis answers in order, so the command answered is the oldest one waiting.
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [id](const Waiting& w) { return w.id == id; });
    if (it == waiting_.end()) return;
    Waiting w = std::move(*it);
    waiting_.erase(it);
    if (reply.type == REDIS_REPLY_ERROR) ++counters_.errors;
    switch (w.kind) {
    case Kind::Hello:
    case Kind::Ping:
        if (reply.type == REDIS_REPLY_ERROR) {
            return fail(fmt::format("it refused the connection's set-up: {}", reply_text(reply)));
        }
        if (w.kind == Kind::Ping) {
            ready_ = true;
            ready_since_ = uv_now(loop_);
            retry_delay_ = settings_.first_retry;
            if (std::exchange(down_, false)) outage_->loop_up();
        }
        return;
    case Kind::Lookup: return on_lookup_reply(w, reply);
    case Kind::Store: return on_store_reply(reply);
    case Kind::Request: return w.answer(&reply);
    }
}

void RedisLoopCache::on_lookup_reply(Waiting& w, const redisReply& reply) {
    if (reply.type == REDIS_REPLY_ERROR) {
        // LOADING after a restart, an ACL...: answered at once, so no session waits,
        // and the connection stays (setting it up afresh would not help).
        if (!wrong_type(reply)) outage_->refused(RedisOutage::Refused::Lookups, std::string(reply_text(reply)));
        return w.done(std::nullopt);
    }
    outage_->accepted(RedisOutage::Refused::Lookups);
    auto record = decode_redis_record(hash_fields(reply));
    if (record) ++counters_.hits;
    w.done(record);
}

void RedisLoopCache::on_store_reply(const redisReply& reply) {
    // A lone DEL answers an integer, EXEC an array, or an error for the whole transaction.
    std::optional<std::string> why;
    if (reply.type == REDIS_REPLY_ERROR) why = std::string(reply_text(reply));
    else if (reply.type == REDIS_REPLY_ARRAY || reply.type == REDIS_REPLY_NIL) why = transaction_error(reply);
    if (why) outage_->refused(RedisOutage::Refused::Stores, *why);
    else outage_->accepted(RedisOutage::Refused::Stores);
}

void RedisLoopCache::on_deadline() {
    if (waiting_.empty()) return;
    const uint64_t now = uv_now(loop_);
    const uint64_t deadline = waiting_.front().deadline;
    if (deadline > now) {
        uv_timer_start(
            deadline_timer_.get(),
            [](uv_timer_t* t) {
                if (auto* self = static_cast<RedisLoopCache*>(t->data)) self->on_deadline();
            },
            deadline - now, 0);
        return;
    }
    ++counters_.timeouts;
    fail(fmt::format("no reply within {}", format_duration(settings_.timeout)));
}

void RedisLoopCache::on_lost(const std::string& why) {
    // An idle connection that Redis closed (its `timeout` setting, a client kill) is no
    // outage: connect again at once, and only a failure of that is one. Once a second at
    // most, so that a server that keeps closing still gets the backoff.
    const bool idle = ready_ && waiting_.empty() && uv_now(loop_) - ready_since_ >= 1000;
    if (!idle) return fail(why);
    connection_.reset();
    ready_ = false;
    uv_timer_start(
        retry_timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<RedisLoopCache*>(t->data)) self->connect();
        },
        0, 0);
}

void RedisLoopCache::fail(const std::string& why) {
    // Its callbacks stop here; replies still on their way are never read.
    connection_.reset();
    ready_ = false;
    uv_timer_stop(deadline_timer_.get());
    if (!std::exchange(down_, true)) outage_->loop_down(why);
    uv_timer_start(
        retry_timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<RedisLoopCache*>(t->data)) self->connect();
        },
        static_cast<uint64_t>(retry_delay_.count()), 0);
    retry_delay_ = std::min(retry_delay_ * 2, settings_.max_retry);
    // Last, as answering may start anything in the sessions (a lookup now answers a
    // miss at once).
    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (auto& w : waiting) {
        if (w.done) w.done(std::nullopt);
        if (w.answer) w.answer(nullptr);
    }
}

namespace {

class RedisCacheSource final : public VerdictCacheSource {
public:
    RedisCacheSource(const RedisSettings& settings, Logger& log)
        : settings_(settings), outage_(std::make_shared<RedisOutage>(settings.address, log)) {}

    CacheStores for_loop(uv_loop_t* loop) override {
        auto cache = std::make_shared<RedisLoopCache>(loop, settings_, outage_);
        return {cache, cache};
    }

private:
    RedisSettings settings_;
    std::shared_ptr<RedisOutage> outage_;
};

}  // namespace

std::unique_ptr<VerdictCacheSource> open_redis_cache(const RedisSettings& settings, Logger& log) {
    return std::make_unique<RedisCacheSource>(settings, log);
}

}  // namespace smtpscreen
