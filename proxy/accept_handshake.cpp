#include "proxy/accept_handshake.h"

#include <algorithm>

#include "proxy/handoff_header.h"
#include "proxy/worker.h"

namespace smtpscreen {
namespace {

// What the client sent after a PROXY header and before its greeting: kept for the session.
constexpr size_t kMaxEarlyBytes = 4096;

}  // namespace

AcceptHandshake::AcceptHandshake(Worker& worker, SessionSettings::Ref settings)
    : worker_(worker), settings_(std::move(settings)) {
    accepted_.conn = std::make_unique<Connection>(worker.loop(), worker.read_buffer(), *this);
}

int AcceptHandshake::start(uv_stream_t* listener, const std::optional<Endpoint>& listen_local) {
    Connection& conn = *accepted_.conn;
    accepted_.accepted_at = uv_now(worker_.loop());
    if (int rc = conn.accept(listener); rc != 0) return rc;
    auto peer = conn.peer();
    auto local = listen_local ? listen_local : conn.local();
    if (!peer || !local) return UV_ENOTCONN;  // reset before we got to it
    accepted_.client = *peer;
    accepted_.local = *local;
    // Counted in from here: the session that follows takes the gauge's first step over.
    worker_.metrics().connections.add();
    worker_.metrics().enter_phase(SessionPhase::Count, SessionPhase::ProxyHeader);

    if (settings_->config().proxy_protocol == ProxyProtocol::Off) {
        identified();
        return 0;
    }
    bool trusted = std::any_of(settings_->config().proxy_from.begin(), settings_->config().proxy_from.end(),
                               [&](const Cidr& c) { return c.contains(accepted_.client); });
    if (!trusted) {
        worker_.events().proxy_header_error(accepted_.client, "sender is not in listen.proxy_from");
        fail("proxy-refused");
        return 0;
    }
    // No banner and no greet wait until the load balancer has said who the client is.
    timer_ = UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(worker_.loop(), t); }, this);
    if (timer_) {
        uv_timer_start(
            timer_.get(),
            [](uv_timer_t* t) {
                auto* self = static_cast<AcceptHandshake*>(t->data);
                if (self == nullptr) return;
                self->worker_.events().proxy_header_error(self->accepted_.client,
                                                          "no complete header within listen.proxy_timeout");
                self->fail("timeout");
            },
            static_cast<uint64_t>(std::max<int64_t>(settings_->config().proxy_timeout.count(), 0)), 0);
    }
    conn.start_reading();
    return 0;
}

void AcceptHandshake::on_data(Connection&, std::string_view bytes) {
    if (!done_) read_header(bytes);
}

void AcceptHandshake::read_header(std::string_view bytes) {
    std::string& buffered = accepted_.early_bytes;
    buffered.append(bytes.substr(0, kProxyHeaderMaxLength + kMaxEarlyBytes - buffered.size()));
    ProxyHeader header = parse_proxy_header(buffered, settings_->config().proxy_protocol);
    if (header.status == ProxyHeader::Status::NeedMore) {
        if (buffered.size() < kProxyHeaderMaxLength) return;
        header.error = "header too long";
    }
    if (header.status != ProxyHeader::Status::Done) {
        worker_.events().proxy_header_error(accepted_.client, header.error);
        return fail("proxy-error");
    }
    buffered.erase(0, header.consumed);
    accepted_.health_check = header.local;
    if (!header.local) {
        accepted_.client = header.source;
        accepted_.local = header.destination;
    }
    accepted_.conn->stop_reading();
    identified();
}

// The session takes the connection over; this handshake is over.
void AcceptHandshake::identified() {
    done_ = true;
    timer_.close();
    worker_.start_session(std::move(settings_), std::move(accepted_));
    worker_.client_done(this);
}

// The load balancer hung up or reset before its header was whole.
void AcceptHandshake::on_peer_eof(Connection&) {
    if (done_) return;
    worker_.events().hangup(accepted_.client, elapsed());
    fail("hangup");
}

void AcceptHandshake::on_socket_error(Connection& conn, int) { on_peer_eof(conn); }

// No session was started: the DISCONNECT line is this handshake's.
void AcceptHandshake::fail(std::string_view outcome) {
    if (done_) return;
    done_ = true;
    worker_.events().disconnect(accepted_.client, outcome, elapsed());
    worker_.metrics().leave_phase(SessionPhase::ProxyHeader);
    timer_.close();
    accepted_.conn->close();
    worker_.client_done(this);
}

Millis AcceptHandshake::elapsed() const { return Millis(uv_now(worker_.loop()) - accepted_.accepted_at); }

}  // namespace smtpscreen
