#include "proxy/backend_handoff.h"

#include <fmt/format.h>

#include <cctype>

#include "core/text.h"
#include "proxy/handoff_header.h"

namespace smtpscreen {

size_t complete_reply_length(std::string_view buffered) {
    size_t pos = 0;
    while (pos < buffered.size()) {
        size_t eol = buffered.find('\n', pos);
        if (eol == std::string_view::npos) return 0;
        std::string_view line = buffered.substr(pos, eol - pos);
        // RFC 5321 §4.2.1: "ddd-" continues a reply, "ddd " or a bare "ddd" ends it.
        if (line.size() < 4 || line[3] != '-') return eol + 1;
        pos = eol + 1;
    }
    return 0;
}

int reply_code(std::string_view reply) {
    if (reply.size() < 3) return 0;
    for (int i = 0; i < 3; ++i) {
        if (!std::isdigit(static_cast<unsigned char>(reply[static_cast<size_t>(i)]))) return 0;
    }
    return (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0');
}

namespace {

bool offers_keyword(std::string_view ehlo_reply, std::string_view keyword) {
    size_t pos = 0;
    while (pos < ehlo_reply.size()) {
        size_t eol = ehlo_reply.find('\n', pos);
        std::string_view line = ehlo_reply.substr(pos, eol == std::string_view::npos ? eol : eol - pos);
        if (line.size() > 4) {
            std::string_view word = line.substr(4, keyword.size());
            const bool same = iequals(word, keyword);
            size_t after = 4 + keyword.size();
            if (same && (line.size() == after || line[after] == ' ' || line[after] == '\r')) return true;
        }
        if (eol == std::string_view::npos) break;
        pos = eol + 1;
    }
    return false;
}

std::string first_line(std::string_view reply) {
    size_t end = reply.find_first_of("\r\n");
    return std::string(reply.substr(0, end));
}

}  // namespace

BackendHandoff::BackendHandoff(uv_loop_t* loop, ReadBuffer& buffer, HandshakeQueue& steps, const Config& config,
                               std::shared_ptr<const TlsClientContext> tls, const std::string& hostname,
                               Listener& listener)
    : steps_(steps),
      config_(config),
      tls_context_(std::move(tls)),
      hostname_(hostname),
      listener_(listener),
      backend_(std::make_unique<Connection>(loop, buffer, *this)) {}

void BackendHandoff::start(const Endpoint& client, const Endpoint& local, std::string client_name, Replay replay) {
    client_ = client;
    local_ = local;
    client_name_ = std::move(client_name);
    replay_ = std::move(replay);
    if (int rc = backend_->connect(config_.backend_address, config_.backend_source_address); rc != 0) {
        std::string from = config_.backend_source_address
                               ? " from " + config_.backend_source_address->ip() + " (backend.source_address)"
                               : std::string();
        return fail(fmt::format("connect to {}{}: {}", config_.backend_address.ip_port(), from, uv_strerror(rc)));
    }
    // Reading is armed together with the connect, so one epoll registration serves both
    // (libuv delivers no read before the connect callback).
    backend_->start_reading();
}

void BackendHandoff::on_connected(Connection&, int status) {
    if (status != 0) {
        fail(fmt::format("connect to {}: {}", config_.backend_address.ip_port(), uv_strerror(status)));
        return;
    }
    // The PROXY header goes first, before the backend's greeting, as haproxy sends it.
    if (config_.handoff == Handoff::ProxyV2) backend_->write(encode_proxy_v2(client_, local_));
    if (config_.handoff == Handoff::ProxyV1) backend_->write(encode_proxy_v1(client_, local_));
    step_ = Step::Greeting;
}

// The leg moves plaintext only: in TLS (backend.tls = on) the connection encrypts.
void BackendHandoff::on_data(Connection&, std::string_view bytes) {
    reply_.append(bytes);
    for (;;) {
        size_t len = complete_reply_length(reply_);
        if (len == 0) break;
        std::string reply = reply_.substr(0, len);
        reply_.erase(0, len);
        on_reply(reply);
        if (step_ == Step::Ready || step_ == Step::Failed) return;
    }
    if (reply_.size() > kMaxReply) fail("backend reply longer than 16 KiB");
}

// RFC 3207 §4.2: the session starts over; Postfix wants a new EHLO, which the client
// (or the replay, or the XCLIENT step) sends.
void BackendHandoff::on_tls_ready(Connection&) { announce_client(); }

void BackendHandoff::on_tls_failed(Connection&, TlsFailure failure) {
    const TlsStream& tls = *backend_->tls();
    const std::string& error = tls.error();
    switch (failure) {
    case TlsFailure::Handshake:
        if (!tls.name_mismatch()) return fail("backend TLS handshake: " + error);
        return fail(fmt::format("backend TLS handshake: {}; the certificate does not name \"{}\" (set "
                                "backend.tls_name to a name the backend's certificate carries)",
                                error, config_.backend_certificate_name()));
    case TlsFailure::Overflow: return fail("backend TLS: " + error);
    case TlsFailure::Record: return fail("backend closed TLS: " + error);
    }
}

void BackendHandoff::on_reply(const std::string& reply) {
    int code = reply_code(reply);
    switch (step_) {
    case Step::Greeting:
        // A 4xx or 5xx greeting is the backend's own policy for this client (anvil's
        // connection limits, an access map with smtpd_delay_reject = no): the client
        // gets it as it is, so a permanent refusal bounces and a temporary one is
        // retried, as without smtpscreen in front. After the deep tests it answers the
        // client's RCPT. Anything else is a backend we cannot talk to.
        if (code >= 400 && code < 600) return refused(reply);
        if (code != 220) return fail("backend greeting is not 220: " + first_line(reply));
        greeting_ = reply;
        if (tls_context_) {
            step_ = Step::TlsEhlo;
            return backend_->write(fmt::format("EHLO {}\r\n", hostname_));
        }
        return announce_client();
    case Step::TlsEhlo:
        if (code != 250 || !offers_keyword(reply, "STARTTLS")) {
            return fail("backend.tls = on but the backend does not offer STARTTLS (EHLO reply: " + first_line(reply) + ")");
        }
        step_ = Step::TlsStarttls;
        return backend_->write("STARTTLS\r\n");
    case Step::TlsStarttls: {
        if (code != 220) return fail("backend refused STARTTLS: " + first_line(reply));
        // Anything the backend sent after its 220 came in clear and is dropped
        // (CVE-2011-0411, the server-side twin).
        discarded_ = reply_.size();
        reply_.clear();
        std::string error;
        auto tls = TlsStream::client(tls_context_, config_.backend_certificate_name(), nullptr, &error);
        if (!tls) return fail("backend TLS: " + error);
        step_ = Step::TlsHandshake;
        return backend_->start_tls(std::move(tls), steps_, config_.tls_handshake_nice);
    }
    case Step::XclientEhlo:
        if (code != 250 || !offers_keyword(reply, "XCLIENT")) {
            return fail(fmt::format(
                "backend does not offer XCLIENT to us (EHLO reply: {}); list smtpscreen's address in the "
                "backend's smtpd_authorized_xclient_hosts",
                first_line(reply)));
        }
        step_ = Step::XclientReply;
        // Postfix resets the session unless NAME is given: the forward-confirmed name,
        // or [UNAVAILABLE] as Postfix itself says when there is none.
        backend_->write(encode_xclient(
            {client_, client_name_.empty() ? "[UNAVAILABLE]" : client_name_, replay_.helo, replay_.proto}));
        return;
    case Step::XclientReply:
        // XCLIENT is answered with a new greeting (Postfix XCLIENT_README). Postfix
        // applies its connection policy to the announced client there, not at our
        // connect: anvil's "421 4.7.0 ... too many connections from <client>" comes as
        // the answer to XCLIENT, and is the client's to see, as in the greeting step.
        // Other refusals (550 insufficient authorization, 501) are ours to fix, never
        // the client's: a generic 421 and the reason in the log.
        if (code / 100 == 4) return refused(reply);
        if (code != 220) return fail("backend refused XCLIENT: " + first_line(reply));
        return greeted(reply);
    case Step::Replaying:
        // The client saw 250 to its EHLO and MAIL; a backend that refuses one of them
        // has its refusal shown as the answer to the RCPT, so the client never
        // believes a recipient was taken that the backend has no transaction for.
        if (replayed_ == 1 && replay_.proto == "ESMTP" && code == 250) listener_.backend_ehlo(reply);
        if (replayed_ == replay_.lines.size() || code / 100 != 2) return ready(reply);
        backend_->write(replay_.lines[replayed_++]);
        return;
    default:
        return;
    }
}

// The client is announced after the greeting (and after STARTTLS with backend.tls):
// with XCLIENT by EHLO + XCLIENT, whose 220 then stands for the greeting.
void BackendHandoff::announce_client() {
    if (config_.handoff != Handoff::Xclient) return greeted(greeting_);
    step_ = Step::XclientEhlo;
    backend_->write(fmt::format("EHLO {}\r\n", hostname_));
}

void BackendHandoff::greeted(const std::string& greeting) {
    if (replay_.lines.empty()) return ready(greeting);
    step_ = Step::Replaying;
    backend_->write(replay_.lines[replayed_++]);
}

void BackendHandoff::ready(const std::string& reply) {
    step_ = Step::Ready;
    // Still reading: the listener takes the connection over within this call, and a
    // stop and restart would cost two epoll_ctl calls a session.
    listener_.handoff_ready(reply);
}

void BackendHandoff::refused(const std::string& reply) {
    step_ = Step::Ready;
    listener_.handoff_refused(reply);
}

void BackendHandoff::on_peer_eof(Connection&) {
    // A close_notify in the middle of the handoff is the backend's goodbye as much as a FIN.
    if (const TlsStream* tls = backend_->tls(); tls && tls->closed()) return fail("backend closed TLS: " + tls->error());
    fail("backend closed the connection before its greeting");
}

void BackendHandoff::on_socket_error(Connection&, int status) {
    fail(fmt::format("backend connection failed: {}", uv_strerror(status)));
}

void BackendHandoff::fail(std::string why) {
    if (step_ == Step::Failed) return;
    step_ = Step::Failed;
    backend_->close();
    listener_.handoff_failed(std::move(why));
}

}  // namespace smtpscreen
