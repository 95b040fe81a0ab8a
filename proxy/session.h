#pragma once
// One client connection from accept to DISCONNECT: "The life of a connection" in
// docs/design.md (its step numbers head the sections below), read top to bottom in
// session.cpp. One state machine; every event (read, timer, DNS answer,
// backend reply) arrives as a callback and is dispatched on the current phase.
#include <uv.h>

#include <cassert>
#include <memory>
#include <optional>
#include <string>

#include "config/config.h"
#include "core/deadline_timers.h"
#include "dnsbl/check.h"
#include "dnsbl/dns_client.h"
#include "edge/greylist.h"
#include "edge/tarpit.h"
#include "proxy/accept_handshake.h"
#include "proxy/backend_handoff.h"
#include "proxy/connection.h"
#include "proxy/handshake_slots.h"
#include "proxy/live_client.h"
#include "proxy/session_settings.h"
#include "proxy/tls_config.h"
#include "screen/access_list.h"
#include "screen/smtp_dialog.h"
#include "screen/test_results.h"

namespace smtpscreen {

class RelayFilter;
class Worker;

class Session final : public LiveClient,
                      public ConnectionEvents,
                      public DeadlineListener,
                      private DnsblWaiter {
public:
    // Takes the accepted client's socket into its own connection.
    Session(Worker& worker, SessionSettings::Ref settings, Connection& accepted);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Takes the accepted client over (its PROXY header, if any, already read; its
    // socket already in client_).
    void start(AcceptedClient accepted);
    bool finished() const override { return phase_ == Phase::Done; }
    // Shutdown grace is over: end the session now.
    void abort(std::string_view outcome) override;

private:
    enum class Phase : uint8_t { Accepted, HealthCheck, Cache, GreetWait, DnsblWait, Enforce, Tarpit, Deep, TlsFirst, Handoff, Relay, Done };
    enum class Failure : uint8_t { None, Pregreet, Dnsbl, AccessList, Ban };

    // step 1: accepted (past a load balancer's PROXY header: proxy/accept_handshake.h),
    // the bans, the rate limits, then the connection count limits
    void client_identified();
    void check_rates();
    void admit_connection();
    void count_failure();
    void start_health_check();
    void open_dialog(DialogOptions options, Millis time_limit);
    // steps 2-3: access list and cache
    void screen_known_client();
    void on_cache_record(const std::optional<TestResults>& record);
    bool passed_all_enabled_tests(const TestResults& record) const;
    bool deep_passes_valid(const TestResults& record, int64_t now) const;
    // steps 4-5: greet wait, pregreet, DNSBL verdict
    void start_greet_wait();
    void on_pregreet(std::string_view bytes);
    // DnsblWaiter: the session itself waits for its lookups, so that the check (dnsbl_)
    // needs no way back and no vtable pointer of its own.
    void dnsbl_reply(DnsblSubscription& which, const DnsblReply& reply) override;
    void dnsbl_answered(const std::string& zone, DnsblReply::Status status);  // for the metrics
    // The verdict so far; `settled`: every zone answered or expired, the check is finished.
    void keep_dnsbl_verdict(const DnsblVerdict& verdict, bool settled);
    void dnsbl_updated(bool complete);  // acts on the verdict so far, as soon as it may
    void on_greet_wait_over();
    void expire_dnsbl();
    void conclude_screening();
    void record_passes(bool pregreet_ok, bool dnsbl_ok);
    bool dnsbl_listed() const;
    DnsblVerdict dnsbl_verdict() const;
    // step 7: actions
    void act_on_failure(Failure failure, Action action);
    void drop(Failure failure);
    void start_enforce(Failure failure);
    // the tarpit (edge/tarpit.h): the enforce dialog, its replies given out slowly
    void start_tarpit(Failure failure);
    bool enter_tarpit();  // false: tarpit.max_connections are held already
    SmtpDialog& tarpit_dialog();
    void pace_tarpit();
    void on_tarpit_timer();
    void end_tarpit_at_time_limit();
    // step 6: deep protocol tests, then a handoff that replays the transaction
    bool deep_tests_pending() const;
    void start_deep();
    // Both the enforce action and the deep tests talk to the client through dialog_.
    void on_dialog_events(std::vector<DialogEvent> events);
    void feed_dialog(std::string_view bytes);
    void pace_dialog();
    bool in_dialog() const;  // Enforce, Deep or HealthCheck: the client talks to dialog_
    size_t reply_room() const;
    void on_deep_handoff(const SmtpTransaction& tx);
    void on_greylist_outcome(const SmtpTransaction& tx, GreylistOutcome outcome);
    void start_deep_handoff(const SmtpTransaction& tx);
    void record_deep_passes();
    // TLS before the backend (docs/design.md, "TLS"): a client handed off at once, when
    // tls.cert is set, is greeted and answered up to its handshake by the dialog, and
    // handed off at its first command that needs the backend.
    void hand_off_known_client();
    void start_tls_first();
    void start_tls_first_handoff(const SmtpTransaction& tx);
    bool tls_first() const { return dialog_ && dialog_->mode() == DialogMode::TlsFirst; }
    // the client leg in TLS (docs/design.md, "TLS"): the connection does the records,
    // the session reads and writes plaintext only
    void on_client_bytes(std::string_view bytes);
    void start_client_tls();
    bool take_tls_slot();
    void give_back_tls_slot();
    DialogOptions with_tls_slot(DialogOptions options);
    // step 8: handoff and relay
    void start_handoff(BackendHandoff::Replay replay = {});
    void start_name_lookup();
    void connect_backend(BackendHandoff::Replay replay);
    // Told by the handoff through the relay's object (Relay), which listens for the
    // session: a listener's vtable pointer in the session would cost every idle client.
    void handoff_ready(std::string greeting);
    void handoff_failed(std::string why);
    void handoff_refused(std::string reply);
    void backend_ehlo(std::string reply);
    void start_relay();
    void relay_from_client(std::string_view bytes);
    void relay_from_backend(std::string_view bytes);
    void relay_output(std::string_view to_client, std::string_view to_backend);
    void update_backpressure();
    // A half-close from either side (docs/design.md, "Half-close")
    void on_client_eof();
    void on_backend_eof();
    void relay_half_closes();
    void end_relay();
    // step 9
    void finish(std::string_view outcome);
    void close_client_after_flush();
    Connection::ResetNote reset_note(std::string who) const;

    // ConnectionEvents
    void on_data(Connection& conn, std::string_view bytes) override;
    void on_peer_eof(Connection& conn) override;
    void on_socket_error(Connection& conn, int status) override;
    void on_drained(Connection& conn) override;
    void on_connected(Connection& conn, int status) override;
    void on_tls_ready(Connection& conn) override;
    void on_tls_failed(Connection& conn, TlsFailure failure) override;

    void enter(Phase next);
    void arm_timer(Millis after);
    void on_deadline() override;
    Millis elapsed() const;
    uint64_t dnsbl_deadline() const;  // uv_now() ms
    std::string client_ip() const { return client_ep_.ip(); }  // the cache, limits and replies key on it
    std::string reject_reply(Failure failure) const;

    // Phase-specific state lives in objects made when their phase starts, so that an
    // idle client in the greet wait holds only what that phase needs (docs/design.md,
    // "Memory per connection"); the flags are bits, kept together.

    // XCLIENT NAME=: the verified reverse name, looked up from admission on (only with
    // backend.handoff = xclient).
    struct NameLookup {
        std::shared_ptr<DnsClient> resolver;
        DnsSubscription lookup;
        bool pending = true;
        std::string name;
        std::optional<BackendHandoff::Replay> handoff_waiting;  // the handoff waits for the name
    };
    // Step 8: the handoff, then the relay; made when the handoff starts. It hears the
    // handoff for the session.
    struct Relay final : BackendHandoff::Listener {
        explicit Relay(Session& s);  // in session.cpp, where RelayFilter is complete
        void handoff_ready(std::string reply) override { session.handoff_ready(std::move(reply)); }
        void handoff_refused(std::string reply) override { session.handoff_refused(std::move(reply)); }
        void backend_ehlo(std::string reply) override { session.backend_ehlo(std::move(reply)); }
        void handoff_failed(std::string why) override { session.handoff_failed(std::move(why)); }

        Session& session;
        std::unique_ptr<BackendHandoff> handoff;
        std::unique_ptr<Connection> backend;
        std::unique_ptr<RelayFilter> filter;
        HandshakeSlots::Slot tls_slot;  // the relayed STARTTLS's (ClientDialog)
        uint64_t last_activity = 0;
    };

    // A session goes on toward the handoff or ends in the tarpit, never both: what the
    // first keeps for later and the tarpit's pace share one place, so that a tarpitted
    // client costs no more than an idle one (docs/design.md, "Memory per connection").
    struct Onward {
        Endpoint local;  // the address the client reached, for the handoff's header
        std::unique_ptr<NameLookup> name;
        std::unique_ptr<TestResults> cached;  // the cache's record of the client, if any
        // What the client sent right behind a PROXY header, or behind its last
        // deep-test command; rare, so out of line.
        std::unique_ptr<std::string> early_bytes;
    };
    static_assert(sizeof(Stutter) <= sizeof(Onward), "the tarpit's pace must fit the room it takes over");
    // One or the other, told apart by tarpitting_ rather than a std::variant's index,
    // which would take 8 bytes of its own.
    union Route {
        Route() : onward() {}
        ~Route() {}
        Onward onward;
        Stutter stutter;
    };
    Onward& onward() {
        assert(!tarpitting_);
        return route_.onward;
    }
    const Onward& onward() const {
        assert(!tarpitting_);
        return route_.onward;
    }
    Stutter& stutter() {
        assert(tarpitting_);
        return route_.stutter;
    }

    const Config& config() const { return settings_->config(); }
    const TlsContexts& tls() const { return settings_->tls(); }

    Worker& worker_;
    SessionSettings::Ref settings_;  // the configuration it started under, with its TLS contexts
    Connection client_;  // inside the session: one allocation fewer per client
    Endpoint client_ep_;
    // uv_now() ms at the accept, its low 32 bits: a session's times are differences
    // from it, modulo 2^32 (sessions last far less than 49 days). 4 bytes and the two
    // fields below fill the room client_ep_ leaves to the next 8-byte boundary.
    uint32_t started_at_ = 0;
    // While dnsbl_ is active, when dnsbl.timeout is over (ms after started_at_); once
    // the verdict is settled, its smallest TTL (when dnsbl_has_ttl_). Never both at once.
    union {
        uint32_t due_ms;
        uint32_t min_ttl;
    } dnsbl_time_{};
    // The verdict's score so far (dnsbl_verdict()).
    int dnsbl_score_ = 0;
    // The phase's time limit, on the loop's one timer; in the tarpit also its next
    // octet, in the tarpit's line of that timer.
    Deadline timer_;
    // steps 4-5: the DNSBL lookups in flight, inside the session: the first zone's
    // subscription (the session is its waiter), the other zones' behind one pointer;
    // its deadline is dnsbl_time_.due_ms. Finished once every zone has answered or
    // dnsbl.timeout has passed; the verdict stays (dnsbl_score_, dnsbl_time_.min_ttl,
    // dnsbl_top_site_, dnsbl_failed_, dnsbl_has_ttl_). The resolver
    // they were asked of is kept by the worker, across a reload that replaces it, until
    // this session is over (Worker::retire_resolver): a reference to it here would cost
    // every idle client 16 bytes.
    DnsblCheck dnsbl_;
    // The dialog, with the slot of tls.max_pending_handshakes its STARTTLS takes: held
    // from our 220 to STARTTLS until the handshake ends. The slot is the dialog's, or in
    // the relay the relay's (Relay::tls_slot): a session holds none of its own.
    struct ClientDialog final : SmtpDialog {
        using SmtpDialog::SmtpDialog;
        HandshakeSlots::Slot tls_slot;
    };
    std::unique_ptr<ClientDialog> dialog_;  // Phase::Enforce, Tarpit, Deep, TlsFirst, HealthCheck
    std::unique_ptr<Relay> relay_;
    Route route_;  // the Stutter from Phase::Tarpit on (tarpitting_): the pace of its replies

    Phase phase_ = Phase::Accepted;
    Failure enforced_ = Failure::None;
    std::optional<AccessVerdict> access_;  // access.file's line for the client, if one matches
    // The verdict's top zone so far: the index of its site in config().dnsbl_sites.
    static constexpr uint16_t kNoSite = UINT16_MAX;
    uint16_t dnsbl_top_site_ = kNoSite;
    bool admitted_ : 1 = false;
    bool health_check_ : 1 = false;     // the load balancer's own connection: no client session to log
    bool failure_counted_ : 1 = false;  // toward ban.after: once per session
    bool banned_ : 1 = false;           // a ban in force, ban.action = tarpit: to the tarpit once admitted
    bool banner_started_ : 1 = false;   // "220-" sent: what follows must finish that reply
    bool pregreet_seen_ : 1 = false;
    bool tarpit_slot_ : 1 = false;       // one of tarpit.max_connections, given back at the end
    bool greylist_pending_ : 1 = false;  // the greylist's store has the RCPT's triplet
    bool greylist_passed_ : 1 = false;   // cache the greylist pass (renewed) at the handoff
    // The side sent its last byte: a FIN, or a TLS close_notify on its leg.
    bool client_eof_ : 1 = false;
    bool backend_eof_ : 1 = false;
    // The backend greeted with a refusal: the session is relayed as usual (the backend
    // answers the client's QUIT, or closes after its 421) and ends as backend-refused.
    bool backend_refused_ : 1 = false;
    bool dnsbl_failed_ : 1 = false;   // the verdict's any_failed so far
    bool dnsbl_has_ttl_ : 1 = false;  // dnsbl_time_.min_ttl holds the settled verdict's min_ttl
    bool tarpitting_ : 1 = false;     // route_ holds the Stutter
};

}  // namespace smtpscreen
