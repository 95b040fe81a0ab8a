#pragma once
// What a worker keeps alive for each accepted connection until it is over: first the
// handshakes at accept (proxy/accept_handshake.h), then the session (proxy/session.h).
// Each tells the worker itself when it is over (Worker::client_done); the worker destroys
// it after the callback that ended it has returned.
#include <cstdint>
#include <string_view>

namespace smtpscreen {

class LiveClient {
public:
    virtual ~LiveClient() = default;
    // Shutdown grace is over: end now, logged with `outcome`.
    virtual void abort(std::string_view outcome) = 0;
    virtual bool finished() const = 0;
    // Given by the worker when it takes the client in, unique on its loop: with the
    // client's slot in the worker's table, what tells a late callback that its client is
    // still there (Worker::alive), without a control block per client. 40 bits wrap
    // after 10^12 clients, long after any store's callback has come.
    uint64_t serial() const { return serial_; }

private:
    friend class Worker;
    static constexpr uint64_t kNoSlot = (uint64_t{1} << 24) - 1;
    // One word: a session's size decides its malloc chunk (docs/design.md, "Memory per
    // connection"). The slot: where the worker keeps it; fewer clients than 2^24 - 1
    // are ever open on a loop (the open files limit is under 2^20).
    uint64_t serial_ : 40 = 0;
    uint64_t slot_ : 24 = kNoSlot;
};

}  // namespace smtpscreen
