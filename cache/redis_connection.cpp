#include "cache/redis_connection.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <cstdint>
#include <utility>
#include <vector>

// hiredis's libuv adapter: static C functions in a header, written for C.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <hiredis/adapters/libuv.h>
#pragma GCC diagnostic pop

namespace smtpscreen {

std::unique_ptr<RedisConnection> RedisConnection::open(uv_loop_t* loop, const RedisSettings& settings, Events& events,
                                                       std::string& why) {
    redisAsyncContext* context = settings.unix_socket()
                                     ? redisAsyncConnectUnix(settings.address.c_str())
                                     : redisAsyncConnect(settings.host().c_str(), settings.port());
    if (context == nullptr) {
        why = "out of memory";
        return nullptr;
    }
    // A connect that failed at once (a unix socket nobody listens on) leaves a context
    // that no event library was attached to yet: ours to free.
    if (context->err != 0) {
        why = context->errstr;
        redisAsyncFree(context);
        return nullptr;
    }
    if (redisLibuvAttach(context, loop) != REDIS_OK) {
        why = "cannot watch its socket on the event loop";
        redisAsyncFree(context);
        return nullptr;
    }
    std::unique_ptr<RedisConnection> connection(new RedisConnection(context, events));
    context->data = connection.get();
    redisAsyncSetConnectCallback(context, &RedisConnection::connected);
    redisAsyncSetDisconnectCallback(context, &RedisConnection::disconnected);
    return connection;
}

RedisConnection::~RedisConnection() {
    if (context_ == nullptr) return;
    // hiredis answers the unanswered commands with no reply and calls the disconnect
    // callback while freeing (later, when this runs inside one of its callbacks):
    // with no owner in data they are ignored.
    context_->data = nullptr;
    redisAsyncFree(std::exchange(context_, nullptr));
}

bool RedisConnection::send(const RedisCommand& command, uint64_t id) {
    if (context_ == nullptr) return false;
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    argv.reserve(command.size());
    lengths.reserve(command.size());
    for (const auto& arg : command) {
        argv.push_back(arg.data());
        lengths.push_back(arg.size());
    }
    void* privdata = reinterpret_cast<void*>(static_cast<uintptr_t>(id));
    return redisAsyncCommandArgv(context_, id != 0 ? &RedisConnection::replied : nullptr, privdata,
                                 static_cast<int>(argv.size()), argv.data(), lengths.data()) == REDIS_OK;
}

void RedisConnection::replied(redisAsyncContext* context, void* reply, void* privdata) {
    auto* self = static_cast<RedisConnection*>(context->data);
    // No reply: hiredis is giving the connection up, and on_lost follows.
    if (self == nullptr || reply == nullptr) return;
    self->events_.on_reply(reinterpret_cast<uintptr_t>(privdata), *static_cast<const redisReply*>(reply));
}

void RedisConnection::connected(const redisAsyncContext* context, int status) {
    auto* self = static_cast<RedisConnection*>(context->data);
    if (self != nullptr && status != REDIS_OK) self->lost(context, "cannot connect");
}

void RedisConnection::disconnected(const redisAsyncContext* context, int status) {
    (void)status;
    auto* self = static_cast<RedisConnection*>(context->data);
    if (self != nullptr) self->lost(context, "the connection was closed");
}

void RedisConnection::lost(const redisAsyncContext* context, const char* fallback) {
    // hiredis frees the context once this returns, after answering the unanswered
    // commands with no reply: forget it, and let none of that reach the owner. data is
    // ours (hiredis never reads it), so writing it through the const pointer is sound.
    const_cast<redisAsyncContext*>(context)->data = nullptr;
    context_ = nullptr;
    // Before hiredis copies it to err/errstr (it does so only after a failed connect's
    // callback), the reason is in the inner context.
    std::string why = fallback;
    if (context->c.err != 0) why = context->c.errstr;
    else if (context->err != 0 && context->errstr != nullptr) why = context->errstr;
    events_.on_lost(why);  // may destroy this object
}

}  // namespace smtpscreen
