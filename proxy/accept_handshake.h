#pragma once
// Step 1 of "The life of a connection" (docs/design.md): what happens to a connection
// before its session starts, as HAProxy's connection handshakes and OpenSMTPD's io layer
// do it. It is accepted, and on a listen.proxy_protocol listener the load balancer's
// PROXY header is read (bounded in size and by listen.proxy_timeout), so that the
// session starts with the real client's address and never sees the header.
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "core/uv_handle.h"
#include "proxy/connection.h"
#include "proxy/live_client.h"
#include "proxy/session_settings.h"

namespace smtpscreen {

class Worker;

// What an accepted connection brings to its session.
struct AcceptedClient {
    std::unique_ptr<Connection> conn;  // not reading; the session takes its events over
    Endpoint client;                   // the socket's peer, or the client the PROXY header named
    Endpoint local;                    // where the client connected to (the header's destination)
    uint64_t accepted_at = 0;          // uv_now: a session's duration counts from the accept
    std::string early_bytes;           // what the client sent right behind the PROXY header
    bool health_check = false;         // a v2 LOCAL or v1 UNKNOWN header: the balancer's own check
};

class AcceptHandshake final : public LiveClient, public ConnectionEvents {
public:
    AcceptHandshake(Worker& worker, SessionSettings::Ref settings);
    AcceptHandshake(const AcceptHandshake&) = delete;
    AcceptHandshake& operator=(const AcceptHandshake&) = delete;

    // Accepts the pending connection on `listener`; the session starts from within this
    // call when the listener takes no PROXY header. A libuv error code when there was
    // nothing to accept (the handshake is then discarded unlogged).
    // listen_local: the listener's address when it is bound to one (not a wildcard).
    int start(uv_stream_t* listener, const std::optional<Endpoint>& listen_local);
    void abort(std::string_view outcome) override { fail(outcome); }
    bool finished() const override { return done_; }

private:
    void read_header(std::string_view bytes);
    void identified();
    void fail(std::string_view outcome);
    Millis elapsed() const;

    // ConnectionEvents: only reads happen before the session.
    void on_data(Connection& conn, std::string_view bytes) override;
    void on_peer_eof(Connection& conn) override;
    void on_socket_error(Connection& conn, int status) override;
    void on_drained(Connection&) override {}
    void on_connected(Connection&, int) override {}
    void on_tls_ready(Connection&) override {}
    void on_tls_failed(Connection&, TlsFailure) override {}

    Worker& worker_;
    SessionSettings::Ref settings_;  // handed to the session it starts
    AcceptedClient accepted_;
    UvHandle<uv_timer_t> timer_;  // listen.proxy_timeout, on a proxy_protocol listener only
    bool done_ = false;
};

}  // namespace smtpscreen
