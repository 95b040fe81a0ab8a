#pragma once
// One asynchronous hiredis connection, driven by a libuv loop through hiredis's libuv
// adapter (hiredis/adapters/libuv.h). It owns the redisAsyncContext for as long as
// hiredis lets it: hiredis frees the context itself after a failed connect or a lost
// connection (running the callbacks of unanswered commands with no reply first), and
// this class then forgets it and reports the loss once; otherwise the destructor frees
// it, and no callback reaches the owner after that. Nothing here blocks: the address
// is an IP address (a host name in cache.redis was resolved when the configuration was
// loaded) or a unix socket path, never a name to resolve.
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "cache/redis_record.h"
#include "cache/redis_settings.h"

struct redisAsyncContext;
struct redisReply;

namespace smtpscreen {

class RedisConnection {
public:
    class Events {
    public:
        virtual ~Events() = default;
        // The reply to the command sent with this id (never 0).
        virtual void on_reply(uint64_t id, const redisReply& reply) = 0;
        // hiredis gave the connection up (refused, reset, closed by the server); the
        // commands not answered by then never will be. Reported once, and never for a
        // connection the owner closed.
        virtual void on_lost(const std::string& why) = 0;
    };

    // Starts connecting to settings.address on loop. nullptr, with `why` set, when that
    // fails at once (no such socket file, no memory).
    static std::unique_ptr<RedisConnection> open(uv_loop_t* loop, const RedisSettings& settings, Events& events,
                                                 std::string& why);
    ~RedisConnection();
    RedisConnection(const RedisConnection&) = delete;
    RedisConnection& operator=(const RedisConnection&) = delete;

    // Queues a command (hiredis pipelines it behind the ones before it; before the
    // connection is up, it is sent once it is). With id 0 its reply is not wanted.
    // False when the connection is gone or going.
    bool send(const RedisCommand& command, uint64_t id);
    bool alive() const { return context_ != nullptr; }

private:
    RedisConnection(redisAsyncContext* context, Events& events) : context_(context), events_(events) {}
    static void connected(const redisAsyncContext* context, int status);
    static void disconnected(const redisAsyncContext* context, int status);
    static void replied(redisAsyncContext* context, void* reply, void* privdata);
    void lost(const redisAsyncContext* context, const char* fallback);

    redisAsyncContext* context_;
    Events& events_;
};

}  // namespace smtpscreen
