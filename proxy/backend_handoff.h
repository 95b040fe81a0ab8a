#pragma once
// Step 8 of docs/design.md up to the relay: connect to the backend (from
// backend.source_address), announce the real client (PROXY v1/v2 header, or EHLO +
// XCLIENT), and wait for the greeting the client will see. Each step is one function;
// replies are read whole (bounded) before the next step.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "proxy/connection.h"
#include "proxy/tls_stream.h"

namespace smtpscreen {

class BackendHandoff final : public ConnectionEvents {
public:
    // A session that passed the deep tests already spoke SMTP with us: its EHLO/HELO,
    // MAIL and first RCPT are replayed to the backend (README, "Deep protocol tests").
    struct Replay {
        std::vector<std::string> lines;  // CRLF-terminated, in order; the last one is the RCPT
        std::string helo;                // for XCLIENT HELO=
        std::string proto;               // "ESMTP" or "SMTP", for XCLIENT PROTO=
        // TLS before the backend (docs/design.md, "TLS"): smtpscreen answered every line
        // (HELO/EHLO at most) itself, so the backend's greeting and its replies to them
        // are the session's to swallow, and no transaction is open after them; the
        // client's next command, relayed, gets the backend's own answer.
        bool client_answered;  // no initializer: a default argument below; Replay{} makes it false
    };

    class Listener {
    public:
        // reply: without a replay, the backend's whole 220 greeting; with one, the
        // backend's answer to the RCPT, or to the first replayed command it refused
        // (the client then sees that refusal as the answer to its RCPT).
        // With Replay::client_answered: the last of those, for no one. The backend leg
        // is still reading: take it over (take_connection, set_events) within this call.
        virtual void handoff_ready(std::string reply) = 0;
        // The backend greeted with a 4xx or 5xx reply (Postfix's anvil "421 4.7.0 ...
        // too many connections", an access map's 554), or answered XCLIENT with a 4xx
        // (anvil's limits for the announced client): it refuses this client, it is not
        // unavailable. reply: that whole greeting, for the client as it is. The backend
        // leg is still reading, as with handoff_ready: take it over within this call.
        virtual void handoff_refused(std::string reply) = 0;
        // The backend's 250 reply to the replayed EHLO (deep.ehlo_keywords = auto learns
        // from it); before handoff_ready.
        virtual void backend_ehlo(std::string reply) = 0;
        // why: for the log, e.g. "connect to 127.0.0.1:10025: connection refused".
        virtual void handoff_failed(std::string why) = 0;

    protected:
        ~Listener() = default;
    };

    // tls: the backend leg's context when backend.tls = on, null otherwise.
    // steps: the loop's way to the TLS handshake pool.
    BackendHandoff(uv_loop_t* loop, ReadBuffer& buffer, HandshakeQueue& steps, const Config& config,
                   std::shared_ptr<const TlsClientContext> tls, const std::string& hostname, Listener& listener);

    // client_name: the verified reverse name for XCLIENT NAME=, empty when there is none.
    void start(const Endpoint& client, const Endpoint& local, std::string client_name, Replay replay = {});
    // After handoff_ready: the connected backend leg, for the relay, in TLS when
    // backend.tls = on (Connection::tls()).
    std::unique_ptr<Connection> take_connection() { return std::move(backend_); }
    // Plain-text bytes the backend sent after its 220 to our STARTTLS; dropped.
    size_t discarded_after_starttls() const { return discarded_; }
    // After handoff_ready: the replay's MAIL was accepted (its RCPT was sent), so the
    // backend holds a mail transaction that the relay must know of.
    bool transaction_open() const {
        return !replay_.client_answered && !replay_.lines.empty() && replayed_ == replay_.lines.size();
    }

private:
    enum class Step { Connecting, Greeting, TlsEhlo, TlsStarttls, TlsHandshake, XclientEhlo, XclientReply, Replaying, Ready, Failed };
    static constexpr size_t kMaxReply = 16 * 1024;

    void on_data(Connection& conn, std::string_view bytes) override;
    void on_peer_eof(Connection& conn) override;
    void on_socket_error(Connection& conn, int status) override;
    void on_drained(Connection&) override {}
    void on_connected(Connection& conn, int status) override;
    void on_tls_ready(Connection& conn) override;
    void on_tls_failed(Connection& conn, TlsFailure failure) override;

    void on_reply(const std::string& reply);
    void greeted(const std::string& greeting);
    void announce_client();
    void ready(const std::string& reply);
    void refused(const std::string& reply);
    void fail(std::string why);

    HandshakeQueue& steps_;
    const Config& config_;
    std::shared_ptr<const TlsClientContext> tls_context_;
    const std::string& hostname_;
    Listener& listener_;
    std::unique_ptr<Connection> backend_;
    Step step_ = Step::Connecting;
    Endpoint client_;
    Endpoint local_;
    std::string client_name_;
    Replay replay_;
    std::string greeting_;  // the backend's 220, what a client without a replay sees
    size_t discarded_ = 0;
    size_t replayed_ = 0;  // lines of replay_ sent so far
    std::string reply_;
};

// Length of the first complete SMTP reply in `buffered` (through the final line's LF),
// or 0 while it is incomplete.
size_t complete_reply_length(std::string_view buffered);
// "250" of "250-...": the reply code, or 0 when the text does not start with one.
int reply_code(std::string_view reply);

}  // namespace smtpscreen
