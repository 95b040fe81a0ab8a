#pragma once
// What a worker keeps alive for each accepted connection until it is over: first the
// handshakes at accept (proxy/accept_handshake.h), then the session (proxy/session.h).
// Each tells the worker itself when it is over (Worker::client_done); the worker destroys
// it after the callback that ended it has returned.
#include <string_view>

namespace smtpscreen {

class LiveClient {
public:
    virtual ~LiveClient() = default;
    // Shutdown grace is over: end now, logged with `outcome`.
    virtual void abort(std::string_view outcome) = 0;
    virtual bool finished() const = 0;
};

}  // namespace smtpscreen
