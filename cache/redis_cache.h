#pragma once
// cache.backend = redis: the verdict cache that several smtpscreen instances share
// (README, "Redis"). Every event loop has its own RedisLoopCache, with one connection
// driven by that loop and pipelined commands; sessions see a VerdictCache like any
// other. A lookup is one HGETALL, a store one MULTI/DEL/HSET/PEXPIREAT/EXEC (the
// record format is in cache/redis_record.h).
//
// No session waits for Redis longer than cache.redis_timeout: each command has a
// deadline, one timer per connection watches the oldest, and a command past it answers
// as a miss, counts as an outage and drops the connection (a frozen Redis keeps its TCP
// connections up and answers nothing). While Redis is unreachable, lookups answer a
// miss at once, stores are dropped, and the connection is retried after 100 ms, then
// twice as late each time up to 10 s. An error reply (LOADING, OOM, an ACL) is a miss
// or a lost store, at once, on a connection that stays. Commands in flight are capped,
// so a Redis that falls behind never makes anything queue without bound.
//
// The same connection carries the connection rate counts of limits.per_client_rate and
// limits.per_network_rate (cache/redis_rates.h) and greylisting's triplets
// (cache/redis_greylist.h), so that the instances sharing the cache count each client
// and greylist each triplet together: request() sends any transaction on it, with the
// same deadline and outage handling.
#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "cache/redis_connection.h"
#include "cache/redis_outage.h"
#include "cache/redis_settings.h"
#include "cache/verdict_cache.h"
#include "core/uv_handle.h"
#include "edge/connection_rates.h"

namespace smtpscreen {

struct RedisCacheCounters {
    uint64_t lookups = 0;         // sent to Redis
    uint64_t hits = 0;            // answered with a record
    uint64_t unavailable = 0;     // answered as a miss at once: no connection, or too many in flight
    uint64_t timeouts = 0;        // commands that outlived cache.redis_timeout
    uint64_t errors = 0;          // error replies
    uint64_t stores = 0;          // sent
    uint64_t stores_dropped = 0;  // not sent: no connection, or too many in flight
    uint64_t connects = 0;        // connections opened, the first included
};

// Bans (cache/ban_record.h) go over the same connection: a lookup is one HGETALL of
// <prefix>ban:<address>, a store one MULTI/HSET/PEXPIREAT/EXEC, with the same deadline
// and the same outage rules (a ban that cannot be read lets the client in).
class RedisLoopCache final : public VerdictCache, public BanStore, private RedisConnection::Events {
public:
    // Starts connecting at once; the loop must outlive this object, which is used from
    // the loop's thread only.
    RedisLoopCache(uv_loop_t* loop, RedisSettings settings, std::shared_ptr<RedisOutage> outage);
    ~RedisLoopCache() override;
    RedisLoopCache(const RedisLoopCache&) = delete;
    RedisLoopCache& operator=(const RedisLoopCache&) = delete;

    void lookup(const std::string& client_ip, LookupDone done) override;
    void store(const std::string& client_ip, const TestResults& results) override;
    void lookup_ban(const std::string& client_ip, BanFound done) override;
    void store_ban(const std::string& client_ip, const Ban& ban) override;
    // The rate counts on this loop go through this connection (cache/redis_rates.h),
    // falling back to `fallback` (this process's table) when Redis cannot answer.
    std::unique_ptr<ConnectionRates> loop_rates(ConnectionRates& fallback) override;
    // The same for the failures toward ban.after (cache/redis_failures.h).
    std::unique_ptr<FailureCounter> loop_failures(FailureCounts& fallback) override;
    // Greylisting's triplets on this loop go through this connection too.
    std::unique_ptr<GreylistStore> loop_greylist() override;

    // Sends `commands` pipelined and hands the reply to the last one to `done`, within
    // cache.redis_timeout; nullptr when there is none: no connection, too many in flight,
    // no reply in time, the connection lost (then at once, or when that is noticed).
    // `done` runs exactly once, from the loop, inline when the commands cannot be sent.
    using ReplyDone = std::function<void(const redisReply*)>;
    void request(const std::vector<RedisCommand>& commands, ReplyDone done);
    const RedisSettings& settings() const { return settings_; }
    RedisOutage& outage() { return *outage_; }

    // Connected, and the connection's AUTH/SELECT/PING answered.
    bool ready() const { return ready_; }
    size_t in_flight() const { return waiting_.size(); }
    const RedisCacheCounters& counters() const { return counters_; }

private:
    enum class Kind { Hello, Ping, Lookup, Store, Request };
    struct Waiting {
        uint64_t id;
        uint64_t deadline;  // uv_now() milliseconds
        Kind kind;
        LookupDone done;    // lookups only
        ReplyDone answer;   // requests only
    };

    void connect();
    // Sends a command whose reply is waited for (its deadline starts now); 0 when it
    // could not be queued, and then `done` was not taken.
    uint64_t send(const RedisCommand& command, Kind kind, LookupDone&& done, ReplyDone&& answer = {});
    // A store's commands; only the last one's reply is waited for. False when dropped.
    bool send_store(const std::vector<RedisCommand>& commands);
    bool usable() const { return connection_ && connection_->alive() && !down_; }
    void on_reply(uint64_t id, const redisReply& reply) override;
    void on_lost(const std::string& why) override;
    void on_lookup_reply(Waiting& w, const redisReply& reply);
    void on_store_reply(const redisReply& reply);
    void on_deadline();
    // Redis is unreachable (or answered nonsense): drop the connection, answer every
    // waiting lookup as a miss, log the outage (once) and retry later.
    void fail(const std::string& why);

    uv_loop_t* loop_;
    const RedisSettings settings_;
    std::shared_ptr<RedisOutage> outage_;
    std::unique_ptr<RedisConnection> connection_;
    // In the order sent, which is the order Redis answers in and the order of deadlines.
    std::deque<Waiting> waiting_;
    uint64_t next_id_ = 1;
    bool ready_ = false;
    uint64_t ready_since_ = 0;  // uv_now() of the last PONG
    bool down_ = false;  // this loop counts as one that lost Redis (RedisOutage)
    Millis retry_delay_;
    UvHandle<uv_timer_t> deadline_timer_;
    UvHandle<uv_timer_t> retry_timer_;
    RedisCacheCounters counters_;
};

// The VerdictCacheSource of cache.backend = redis: a RedisLoopCache for each loop, and
// one RedisOutage between them. `log` must outlive it and every cache it hands out.
std::unique_ptr<VerdictCacheSource> open_redis_cache(const RedisSettings& settings, Logger& log);

}  // namespace smtpscreen
