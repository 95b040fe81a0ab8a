#include "proxy/backend_probe.h"

#include <fmt/format.h>

#include "proxy/backend_handoff.h"
#include "proxy/handoff_header.h"

namespace smtpscreen {
namespace {

constexpr size_t kMaxReply = 16 * 1024;

std::string first_line(std::string_view reply) { return std::string(reply.substr(0, reply.find_first_of("\r\n"))); }

}  // namespace

BackendProbe::BackendProbe(uv_loop_t* loop, BackendOffer& offer, Logger& log)
    : loop_(loop), offer_(offer), log_(log) {
    timer_ = UvHandle<uv_timer_t>([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this);
}

void BackendProbe::start(std::shared_ptr<const Config> config) {
    config_ = std::move(config);
    if (backend_) backend_->close();
    step_ = Step::Idle;
    reply_.clear();
    if (timer_) uv_timer_stop(timer_.get());
    // Asked for the deep tests' dialog and for that of TLS before the backend.
    const bool tls_first = !config_->tls_cert.empty() && config_->tls_before_backend;
    if ((!config_->deep_tests_enabled() && !tls_first) || config_->deep_ehlo_keywords) return;

    backend_ = std::make_unique<Connection>(loop_, *buffer_, *this);
    step_ = Step::Connecting;
    arm(static_cast<uint64_t>(config_->backend_connect_timeout.count()));
    if (int rc = backend_->connect(config_->backend_address, config_->backend_source_address); rc != 0) {
        return fail(fmt::format("connect: {}", uv_strerror(rc)));
    }
    backend_->start_reading();
}

void BackendProbe::stop() {
    if (backend_) backend_->close();
    timer_.close();
    step_ = Step::Idle;
}

void BackendProbe::arm(uint64_t after_ms) {
    if (!timer_) return;
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<BackendProbe*>(t->data)) self->on_timer();
        },
        after_ms, 0);
}

void BackendProbe::on_timer() {
    if (step_ == Step::Waiting) return start(config_);
    if (step_ != Step::Idle) fail("no answer within backend.connect_timeout");
}

void BackendProbe::on_connected(Connection&, int status) {
    if (step_ != Step::Connecting) return;
    if (status != 0) return fail(fmt::format("connect: {}", uv_strerror(status)));
    // The backend may insist on the handoff's header (Postfix's smtpd_upstream_proxy_protocol):
    // it names this connection itself, which is the client asking.
    if (config_->handoff == Handoff::ProxyV1 || config_->handoff == Handoff::ProxyV2) {
        auto local = backend_->local();
        if (!local) return fail("the connection has no local address");
        backend_->write(config_->handoff == Handoff::ProxyV2 ? encode_proxy_v2(*local, config_->backend_address)
                                                             : encode_proxy_v1(*local, config_->backend_address));
    }
    step_ = Step::Greeting;
}

void BackendProbe::on_data(Connection&, std::string_view bytes) {
    reply_.append(bytes);
    while (step_ == Step::Greeting || step_ == Step::Ehlo) {
        const size_t len = complete_reply_length(reply_);
        if (len == 0) break;
        std::string reply = reply_.substr(0, len);
        reply_.erase(0, len);
        on_reply(reply);
    }
    if (reply_.size() > kMaxReply) fail("a reply longer than 16 KiB");
}

void BackendProbe::on_reply(const std::string& reply) {
    const int code = reply_code(reply);
    if (step_ == Step::Greeting) {
        if (code != 220) return fail("greeting: " + first_line(reply));
        step_ = Step::Ehlo;
        return backend_->write(fmt::format("EHLO {}\r\n", config_->hostname));
    }
    if (code != 250) return fail("EHLO: " + first_line(reply));
    offer_.learn(reply, fmt::format("asking {}", config_->backend_address.ip_port()));
    backend_->write("QUIT\r\n");
    backend_->close_after_flush();
    step_ = Step::Idle;
    if (timer_) uv_timer_stop(timer_.get());
}

void BackendProbe::on_peer_eof(Connection&) {
    if (step_ != Step::Idle && step_ != Step::Waiting) fail("the backend closed the connection");
}

void BackendProbe::on_socket_error(Connection&, int status) {
    if (step_ != Step::Idle && step_ != Step::Waiting) fail(uv_strerror(status));
}

void BackendProbe::fail(const std::string& why) {
    if (backend_) backend_->close();
    step_ = Step::Waiting;
    reply_.clear();
    log_.warn("deep.ehlo_keywords = auto: cannot ask the backend {} what it offers ({}); the deep tests' EHLO offers "
              "{}; asking again in {}s",
              config_->backend_address.ip_port(), why, offer_.known() ? "what it offered before" : "nothing yet",
              kRetryMs / 1000);
    arm(kRetryMs);
}

}  // namespace smtpscreen
