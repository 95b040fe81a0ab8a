#pragma once
// deep.ehlo_keywords = auto: asks the backend what it offers, so that the deep-test
// dialog promises a first-time client only what the backend keeps after the replay,
// and the dialog of TLS before the backend offers a known client what the backend does.
// One short SMTP session (greeting, EHLO, QUIT) with the handoff's own header (PROXY
// naming this connection itself, or nothing for xclient), at start, at every SIGHUP,
// and again every kRetryMs while the backend cannot be asked. It runs on the main
// thread's signal loop, which serves no client; what it learns goes to BackendOffer.
#include <uv.h>

#include <memory>
#include <string>

#include "config/config.h"
#include "core/log.h"
#include "core/uv_handle.h"
#include "proxy/backend_offer.h"
#include "proxy/connection.h"

namespace smtpscreen {

class BackendProbe final : public ConnectionEvents {
public:
    static constexpr uint64_t kRetryMs = 30000;

    BackendProbe(uv_loop_t* loop, BackendOffer& offer, Logger& log);
    BackendProbe(const BackendProbe&) = delete;
    BackendProbe& operator=(const BackendProbe&) = delete;

    // Asks now, with these settings (a probe in progress is abandoned). Does nothing,
    // and stops retrying, unless the deep tests or TLS before the backend (tls.cert and
    // tls.before_backend) are on and deep.ehlo_keywords is auto.
    void start(std::shared_ptr<const Config> config);
    // Before the loop ends.
    void stop();

private:
    enum class Step { Idle, Connecting, Greeting, Ehlo, Waiting };

    void on_data(Connection& conn, std::string_view bytes) override;
    void on_peer_eof(Connection& conn) override;
    void on_socket_error(Connection& conn, int status) override;
    void on_drained(Connection&) override {}
    void on_connected(Connection& conn, int status) override;
    // The probe reads the backend's EHLO reply in clear; it never starts TLS.
    void on_tls_ready(Connection&) override {}
    void on_tls_failed(Connection&, TlsFailure) override {}

    void on_reply(const std::string& reply);
    void on_timer();
    void arm(uint64_t after_ms);
    void fail(const std::string& why);

    uv_loop_t* loop_;
    BackendOffer& offer_;
    Logger& log_;
    std::shared_ptr<const Config> config_;
    std::unique_ptr<ReadBuffer> buffer_ = std::make_unique<ReadBuffer>();
    std::unique_ptr<Connection> backend_;
    UvHandle<uv_timer_t> timer_;
    Step step_ = Step::Idle;
    std::string reply_;
};

}  // namespace smtpscreen
