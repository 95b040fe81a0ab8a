#include "bench/client_session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace smtpload {
namespace {

// EADDRNOTAVAIL from connect() means this source address has no ephemeral port left
// for this target (or the address is not usable); the next address of the pool has its
// own port space, so a few retries get through where one address is exhausted.
constexpr int kMaxSourceTries = 8;

// libuv cancels a closing stream's pending writes and connect (UV_ECANCELED) before its
// close callback frees the handle, and UvHandle::close() has cleared handle->data by
// then: requests find their session through their handle, never through a pointer of
// their own, so a request that outlives its session finds nobody.
ClientSession* owner(uv_stream_t* stream) { return static_cast<ClientSession*>(stream->data); }

struct WriteReq {
    uv_write_t req{};
    std::string bytes;  // owned copy; empty when the buffer is the shared message
};

bool is_address_exhaustion(int rc) { return rc == UV_EADDRNOTAVAIL || rc == UV_EADDRINUSE; }

}  // namespace

ClientSession::ClientSession(SessionHost& host, Role role, size_t slot)
    : host_(host),
      role_(role),
      slot_(slot),
      timer_([&host](uv_timer_t* t) { return uv_timer_init(host.loop(), t); }, this) {
    result_.role = role;
}

void ClientSession::start() {
    started_ns_ = uv_hrtime();
    arm_timer(host_.options().timeout);
    connect_from_next_source();
}

int ClientSession::open_and_connect(uint32_t source) {
    tcp_ = smtpscreen::UvHandle<uv_tcp_t>([this](uv_tcp_t* t) { return uv_tcp_init_ex(host_.loop(), t, AF_INET); },
                                          this);
    if (!tcp_) return UV_ENOMEM;
    uv_os_fd_t fd = -1;
    if (uv_fileno(tcp_.handle(), &fd) == 0) {
        // Let connect() pick the port for the whole 4-tuple: bind() alone would reserve a
        // port per source address for every target, and run out at ~28,000 sessions.
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    }
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(source);
    int rc = uv_tcp_bind(tcp_.get(), reinterpret_cast<const sockaddr*>(&src), 0);
    if (rc != 0) return rc;
    // SMTP is one small write per reply here; Nagle would only add delayed-ACK stalls
    // that belong to neither the server nor the client being measured.
    uv_tcp_nodelay(tcp_.get(), 1);
    auto* req = new uv_connect_t{};
    rc = uv_tcp_connect(req, tcp_.get(), reinterpret_cast<const sockaddr*>(&host_.options().target),
                        [](uv_connect_t* r, int status) {
                            ClientSession* self = owner(r->handle);
                            delete r;
                            if (self != nullptr) self->on_connected(status);
                        });
    if (rc != 0) delete req;  // refused synchronously: libuv never saw the request
    return rc;
}

void ClientSession::connect_from_next_source() {
    for (;;) {
        int rc = open_and_connect(host_.next_source(role_));
        if (rc == 0) return;
        if (!is_address_exhaustion(rc) || result_.source_retries >= kMaxSourceTries) return fail(ErrorKind::Connect);
        ++result_.source_retries;
    }
}

void ClientSession::on_connected(int status) {
    if (step_ != Step::Connecting) return;
    if (status != 0) {
        if (is_address_exhaustion(status) && result_.source_retries < kMaxSourceTries) {
            ++result_.source_retries;
            return connect_from_next_source();
        }
        return fail(ErrorKind::Connect);
    }
    result_.connected = true;
    host_.session_connected();
    uv_read_start(
        tcp_.stream(),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
            auto* self = static_cast<ClientSession*>(h->data);
            *buf = self != nullptr ? self->host_.read_buffer() : uv_buf_init(nullptr, 0);
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
            ClientSession* self = owner(s);
            if (self == nullptr || self->step_ == Step::Done) return;
            if (nread > 0) {
                self->heard_ = true;
                std::string_view bytes(buf->base, static_cast<size_t>(nread));
                // From STARTTLS's 220 on, what the server sends is TLS records, not replies.
                if (self->step_ == Step::Handshake) return self->on_tls_bytes(bytes);
                self->replies_.feed(bytes);
            }
            self->on_read(nread);
        });

    switch (role_) {
    case Role::Pregreet:
        // Talk before the server has finished its greeting: the pregreet test's bait.
        step_ = Step::Bot;
        return write_owned("EHLO bot\r\n");
    case Role::Idle:
        step_ = Step::Holding;
        if (ending_) {
            held_to_end_ = true;
            return finish();
        }
        if (host_.options().hold) return arm_timer(*host_.options().hold);
        uv_timer_stop(timer_.get());  // held until run_ending()
        return;
    case Role::Tls:
        return begin_tls();
    default:
        step_ = Step::Greeting;
        return;
    }
}

void ClientSession::on_read(ssize_t nread) {
    if (nread < 0) return on_closed_by_server();  // UV_EOF or an error such as ECONNRESET
    for (;;) {
        ReplyParser::Result r = replies_.next();
        if (r.status == ReplyParser::Status::NeedMore) return;
        if (r.status != ReplyParser::Status::Reply) return fail(ErrorKind::Protocol);
        on_reply(r.code);
        if (step_ == Step::Done) return;
    }
}

void ClientSession::on_reply(int code) {
    last_code_ = code;
    const Options& o = host_.options();
    switch (step_) {
    case Step::Greeting:
        if (code != 220) return on_negative(code);
        step_ = Step::Ehlo;
        return send_command("EHLO " + o.helo + "\r\n");
    case Step::Ehlo:
        if (code != 250) return on_negative(code);
        if (role_ == Role::Starttls) {
            step_ = Step::StartTls;
            return send_command("STARTTLS\r\n");
        }
        step_ = Step::Mail;
        return send_command("MAIL FROM:<" + o.mail_from + ">\r\n");
    case Step::Mail:
        if (code != 250) return on_negative(code);
        step_ = Step::Rcpt;
        return send_command("RCPT TO:<" + o.rcpt_to + ">\r\n");
    case Step::Rcpt:
        if (code != 250 && code != 251) return on_negative(code);
        step_ = Step::Data;
        return send_command("DATA\r\n");
    case Step::Data:
        if (code != 354) return on_negative(code);
        step_ = Step::Body;
        return write_message();
    case Step::Body:
        if (code != 250) return on_negative(code);
        outcome_ = 250;
        step_ = Step::Quit;
        return send_command("QUIT\r\n");
    case Step::Quit:
        return finish();
    case Step::StartTls:
        if (code != 220) return on_negative(code);
        outcome_ = 220;
        return begin_tls();
    case Step::Bot:
        // The greeting (or smtpscreen's "220-" followed by the backend's 220) is not the
        // answer to the bot's EHLO; the next reply is.
        if (code == 220) return;
        outcome_ = code;
        return finish();
    default:
        return;  // AwaitClose, Holding: keep reading until the server closes
    }
}

void ClientSession::on_negative(int code) {
    if (code < 400 || code > 599) return fail(ErrorKind::Protocol);
    outcome_ = code;
    // 421 and 521 close the connection (RFC 5321 §3.8, RFC 7504); other refusals leave
    // the session open, and a polite client says QUIT.
    if (code == 421 || code == 521) {
        step_ = Step::AwaitClose;
        return;
    }
    step_ = Step::Quit;
    send_command("QUIT\r\n");
}

void ClientSession::on_closed_by_server() {
    switch (step_) {
    case Step::Quit:
    case Step::AwaitClose:
    case Step::Bot:
    case Step::Holding:
        // Expected ends: after QUIT or a closing refusal, a bot thrown out, an idle
        // holder that the server let go (the result says it was not held to the end).
        return finish();
    default:
        // An EOF in mid-dialogue, with no reply saying why, is as much a failure as an RST.
        return fail(ErrorKind::Reset);
    }
}

void ClientSession::on_write_error() { on_closed_by_server(); }

void ClientSession::on_timer() {
    if (step_ == Step::Holding) {  // --hold is over
        held_to_end_ = true;
        return finish();
    }
    fail(ErrorKind::Timeout);
}

void ClientSession::run_ending() {
    ending_ = true;
    if (step_ == Step::Holding) {
        held_to_end_ = true;
        finish();
    }
}

void ClientSession::abort() {
    if (step_ != Step::Done) fail(ErrorKind::Timeout);
}

// ---------------------------------------------------------------- TLS

void ClientSession::begin_tls() {
    TlsSessionKeeper& kept = host_.tls_sessions();
    tls_ = std::make_unique<TlsHandshake>(host_.tls(), host_.tls().resume() ? kept.session() : nullptr);
    step_ = Step::Handshake;
    on_tls_status(tls_->start());
}

void ClientSession::on_tls_bytes(std::string_view bytes) { on_tls_status(tls_->feed(bytes)); }

void ClientSession::on_tls_status(TlsHandshake::Status status) {
    if (status == TlsHandshake::Status::Failed) {
        host_.tls().report_failure_once(tls_->failure());
        return fail(ErrorKind::Protocol);
    }
    if (status == TlsHandshake::Status::Done) {
        result_.tls_done = true;
        result_.tls_resumed = tls_->resumed();
        host_.tls().record_first(tls_->ssl());
        if (host_.tls().resume()) host_.tls_sessions().keep_first(tls_->ssl());
        // The server's last flight has been read; the client's last one (its Finished, in
        // a resumed handshake) and a close_notify go out with this write.
        tls_->close_notify();
    }
    std::string out = tls_->take_output();
    if (!out.empty()) write_owned(std::move(out));
    if (status == TlsHandshake::Status::Done && step_ != Step::Done) finish();
}

// ---------------------------------------------------------------- writing

void ClientSession::send_command(std::string text) {
    if (role_ != Role::Slow) return write_owned(std::move(text));
    // A slow client drips each command a byte at a time; the server must neither time
    // it out early nor take the line before its end.
    drip_ = std::move(text);
    if (!drip_timer_) {
        drip_timer_ = smtpscreen::UvHandle<uv_timer_t>(
            [this](uv_timer_t* t) { return uv_timer_init(host_.loop(), t); }, this);
        if (!drip_timer_) return write_owned(std::move(drip_));
    }
    auto delay = static_cast<uint64_t>(host_.options().slow_delay.count());
    uv_timer_start(
        drip_timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<ClientSession*>(t->data)) self->on_drip();
        },
        0, delay == 0 ? 1 : delay);
}

void ClientSession::on_drip() {
    if (drip_.empty() || step_ == Step::Done) {
        uv_timer_stop(drip_timer_.get());
        return;
    }
    std::string one(1, drip_.front());
    drip_.erase(0, 1);
    if (drip_.empty()) uv_timer_stop(drip_timer_.get());
    write_owned(std::move(one));
}

void ClientSession::write_owned(std::string text) {
    auto* w = new WriteReq{};
    w->bytes = std::move(text);
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    result_.bytes_sent += w->bytes.size();
    int rc = uv_write(&w->req, tcp_.stream(), &buf, 1, [](uv_write_t* r, int status) {
        ClientSession* self = owner(r->handle);
        delete reinterpret_cast<WriteReq*>(r);
        if (self != nullptr && status < 0 && self->step_ != Step::Done) self->on_write_error();
    });
    if (rc != 0) {
        delete w;
        on_write_error();
    }
}

void ClientSession::write_message() {
    // The message is shared by every session and outlives them all: no copy, one writev.
    std::string_view m = host_.message();
    auto* w = new WriteReq{};
    uv_buf_t buf = uv_buf_init(const_cast<char*>(m.data()), static_cast<unsigned>(m.size()));
    result_.bytes_sent += m.size();
    int rc = uv_write(&w->req, tcp_.stream(), &buf, 1, [](uv_write_t* r, int status) {
        ClientSession* self = owner(r->handle);
        delete reinterpret_cast<WriteReq*>(r);
        if (self != nullptr && status < 0 && self->step_ != Step::Done) self->on_write_error();
    });
    if (rc != 0) {
        delete w;
        on_write_error();
    }
}

// ---------------------------------------------------------------- the end

void ClientSession::arm_timer(Millis after) {
    if (!timer_) return;
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<ClientSession*>(t->data)) self->on_timer();
        },
        static_cast<uint64_t>(after.count()), 0);
}

void ClientSession::fail(ErrorKind kind) {
    if (step_ == Step::Done) return;
    result_.error = kind;
    finish();
}

void ClientSession::finish() {
    if (step_ == Step::Done) return;
    step_ = Step::Done;
    timer_.close();
    drip_timer_.close();
    tcp_.close();

    result_.code = outcome_ != 0 ? outcome_ : last_code_;
    result_.latency_us = (uv_hrtime() - started_ns_) / 1000;
    if (!result_.error) {
        switch (role_) {
        case Role::Clean:
        case Role::Slow: result_.ok = outcome_ == 250; break;
        // A bot is handled when it never gets service: refused, or closed on.
        case Role::Pregreet: result_.ok = outcome_ == 0 || outcome_ >= 400; break;
        case Role::Dnsbl: result_.ok = outcome_ >= 400; break;
        // A connect can complete in the kernel while the server never accepts it (listen
        // backlog overflow with SYN cookies): only a session the server greeted was held.
        case Role::Idle: result_.ok = held_to_end_ && heard_; break;
        case Role::Starttls:
        case Role::Tls: result_.ok = result_.tls_done; break;
        }
    }
    host_.session_done(*this, result_);
}

}  // namespace smtpload
