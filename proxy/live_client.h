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
    // client's address, what tells a late callback that its client is still there
    // (Worker::alive), without a control block per client.
    uint64_t serial() const { return serial_; }

private:
    friend class Worker;
    uint64_t serial_ = 0;
};

}  // namespace smtpscreen
