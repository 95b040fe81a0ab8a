#include "proxy/session.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <new>
#include <utility>

#include "dnsbl/check.h"
#include "edge/greylist.h"
#include "proxy/client_bans.h"
#include "proxy/handoff_header.h"
#include "proxy/relay_filter.h"
#include "proxy/tls_context.h"
#include "proxy/tls_stream.h"
#include "proxy/worker.h"
#include "screen/access_list.h"
#include "screen/replies.h"

namespace smtpscreen {
namespace {

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

int64_t unix_now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

const char* refusal_text(RelayFilter::Refusal refusal) {
    switch (refusal) {
    case RelayFilter::Refusal::BareLf: return "bare <LF> in message (smuggling.bare_lf = reject)";
    case RelayFilter::Refusal::BareCr: return "bare <CR> in message";
    case RelayFilter::Refusal::LongLine: return "message line longer than 1000 octets (RFC 5321 4.5.3.1.6)";
    default: return "refused";
    }
}

}  // namespace

Session::Session(Worker& worker, SessionSettings::Ref settings, Connection& accepted)
    : worker_(worker),
      settings_(std::move(settings)),
      client_(std::move(accepted), *this),
      timer_(worker.deadlines(), *this) {}

Session::Relay::Relay(Session& s) : session(s) {}

// Every idle client holds a Session: it is 280 bytes, a 288-byte malloc chunk with its
// header; 8 bytes more would take a 304-byte one (docs/design.md, "Memory per
// connection", where the parts are counted).
static_assert(sizeof(Session) <= 280, "an idle client's session outgrew its 288-byte malloc chunk");

Session::~Session() {
    if (tarpitting_) route_.stutter.~Stutter();
    else route_.onward.~Onward();
}

// ---------------------------------------------------------------- step 1: accepted

// The connection arrives accepted, past the load balancer's PROXY header when the
// listener takes one (proxy/accept_handshake.cpp): client_ep_ is the real client.
void Session::start(AcceptedClient accepted) {
    client_ep_ = accepted.client;
    onward().local = accepted.local;
    started_at_ = static_cast<uint32_t>(accepted.accepted_at);
    if (!accepted.early_bytes.empty()) {
        onward().early_bytes = std::make_unique<std::string>(std::move(accepted.early_bytes));
    }
    if (accepted.health_check) return start_health_check();
    client_identified();
}

// A v2 LOCAL header or a v1 "PROXY UNKNOWN" names no client: the load balancer checks
// that we are up. Answered here and never handed off (the backend would take it for a
// client at the balancer's address, one its mynetworks may trust); it is no client
// session, so it is not logged and takes no connection slot. The whole dialog gets
// listen.proxy_timeout.
void Session::start_health_check() {
    enter(Phase::HealthCheck);
    health_check_ = true;
    open_dialog(health_check_options(config()), config().proxy_timeout);
}

// Our 220, then the dialog answers the client: the health check, the deep tests, TLS
// before the backend. What followed a PROXY header came after the load balancer's
// connect: the client's first bytes (after a greet wait it has read them already).
void Session::open_dialog(DialogOptions options, Millis time_limit) {
    client_.write(config().greeting);
    dialog_ = std::make_unique<ClientDialog>(std::move(options));
    arm_timer(time_limit);
    client_.start_reading();
    if (auto early = std::move(onward().early_bytes)) feed_dialog(*early);
}

void Session::client_identified() {
    worker_.events().connect(client_ep_, onward().local);
    access_ = match_access(config().access_rules, client_ep_);
    // Neither the bans nor the rate limits touch an allowlisted client, as Postfix exempts
    // smtpd_client_event_limit_exceptions (docs/design.md, "Edge defences").
    if (!config().ban_rules().on() || access_ == AccessVerdict::Permit) return check_rates();
    worker_.bans().lookup_ban(client_ip(), [this, alive = worker_.liveness(*this)](std::optional<Ban> ban) {
        if (!alive || phase_ != Phase::Accepted) return;
        if (!ban || !ban->in_force(ban_clock_ms())) return check_rates();
        // The BANNED line was written when the ban began.
        worker_.events().ban_refused(client_ep_);
        // ban.action = tarpit: admitted as any client is (the connection limits), never
        // counted by the rate limits, then the tarpit from its greeting on.
        if (config().ban_action == BanAction::Tarpit) {
            banned_ = true;
            return admit_connection();
        }
        // ban.action = drop: one write and the close, before any count, DNS query or
        // greet wait.
        drop(Failure::Ban);
    });
}

// The rate limits count every connection that is not banned, before anything is spent on it.
void Session::check_rates() {
    const RateRules rules = config().rate_rules();
    if (!rules.on() || access_ == AccessVerdict::Permit) return admit_connection();
    worker_.rates().count(client_ep_, rules, uv_now(worker_.loop()),
                          [this, alive = worker_.liveness(*this)](const RateVerdict& verdict) {
        if (!alive || phase_ != Phase::Accepted) return;
        if (!verdict.refused) return admit_connection();
        worker_.events().rate_limited(client_ep_, verdict);
        count_failure();
        client_.write(replies::crlf(replies::too_many_connections_from(config().hostname, client_ip())));
        close_client_after_flush();
        finish("rate-limit");
    });
}

// Each session counts once toward ban.after, whatever it failed and however often.
void Session::count_failure() {
    if (failure_counted_) return;
    failure_counted_ = true;
    count_failure_toward_ban(worker_, client_ep_, config().ban_rules());
}

void Session::admit_connection() {
    const int max_total = std::min(config().max_connections, worker_.fd_capacity());
    switch (worker_.limits().admit(client_ep_, max_total, config().per_client_connections)) {
    case ConnectionLimits::Admit::Ok:
        admitted_ = true;
        if (banned_) return start_tarpit(Failure::Ban);
        if (config().handoff == Handoff::Xclient) start_name_lookup();
        return screen_known_client();
    case ConnectionLimits::Admit::TooManyTotal:
        if (max_total < config().max_connections) worker_.out_of_descriptors();
        worker_.events().too_many_connections(
            client_ep_, max_total < config().max_connections ? "open files limit" : "limits.max_connections");
        client_.write(replies::crlf(replies::too_many_connections(config().hostname)));
        break;
    case ConnectionLimits::Admit::TooManyFromClient:
        worker_.events().too_many_connections(client_ep_, "limits.per_client_connections");
        client_.write(replies::crlf(replies::too_many_connections_from(config().hostname, client_ip())));
        break;
    }
    close_client_after_flush();
    finish("too-many-connections");
}

// ---------------------------------------------------------------- steps 2-3: access list, cache

void Session::screen_known_client() {
    if (const auto& verdict = access_) {
        if (*verdict == AccessVerdict::Permit) {
            worker_.events().allowlisted(client_ep_);
            return hand_off_known_client();
        }
        worker_.events().denylisted(client_ep_);
        if (config().access_action != Action::Ignore) return act_on_failure(Failure::AccessList, config().access_action);
    }
    enter(Phase::Cache);
    worker_.cache().lookup(client_ip(), [this, alive = worker_.liveness(*this)](std::optional<TestResults> record) {
        if (alive && phase_ == Phase::Cache) on_cache_record(record);
    });
}

void Session::on_cache_record(const std::optional<TestResults>& record) {
    if (record) onward().cached = std::make_unique<TestResults>(*record);
    const bool known = record && passed_all_enabled_tests(*record);
    worker_.metrics().cache_lookups[static_cast<size_t>(known    ? CacheResult::Hit
                                                        : record ? CacheResult::Expired
                                                                 : CacheResult::Miss)]
        .add();
    if (known) {
        worker_.events().pass_old(client_ep_);
        return hand_off_known_client();
    }
    start_greet_wait();
}

bool Session::passed_all_enabled_tests(const TestResults& record) const {
    int64_t now = unix_now();
    if (!record.passed(Test::Pregreet, now)) return false;
    if (!config().dnsbl_sites.empty() && !record.passed(Test::Dnsbl, now)) return false;
    return deep_passes_valid(record, now);
}

bool Session::deep_passes_valid(const TestResults& record, int64_t now) const {
    return (!config().deep_pipelining || record.passed(Test::Pipelining, now)) &&
           (!config().deep_non_smtp_command || record.passed(Test::NonSmtp, now)) &&
           (!config().deep_bare_newline || record.passed(Test::BareNewline, now)) &&
           (!config().greylist_enable || record.passed(Test::Greylist, now));
}

// ---------------------------------------------------------------- steps 4-5: greet wait, verdict

void Session::start_greet_wait() {
    enter(Phase::GreetWait);
    // The first line of a multi-line greeting: RFC 5321 clients must wait for the last
    // line, spambots that talk first give themselves away (postscreen's pregreet test).
    client_.write(replies::greeting_first_line(config().banner));
    banner_started_ = true;
    if (!config().dnsbl_sites.empty()) {
        const uint64_t due = static_cast<uint64_t>(elapsed().count()) + static_cast<uint64_t>(config().dnsbl_timeout.count());
        dnsbl_time_.due_ms = static_cast<uint32_t>(std::min<uint64_t>(due, UINT32_MAX));
        dnsbl_.start(onward().name ? *onward().name->resolver : *worker_.resolver(), config().dnsbl_sites,
                     client_ep_, *this);
    }
    arm_timer(config().greet_wait);
    client_.start_reading();
    // Bytes that followed a PROXY header came before our greeting too.
    if (auto early = std::move(onward().early_bytes)) on_pregreet(*early);
}

void Session::on_pregreet(std::string_view bytes) {
    if (pregreet_seen_) return;  // logged once; later bytes are read and dropped (bounded)
    pregreet_seen_ = true;
    worker_.events().pregreet(client_ep_, bytes.size(), elapsed(), bytes);
    // Counted now: a bot that hangs up before the greet wait ends has failed all the same.
    if (config().greet_action != Action::Ignore) count_failure();
    if (config().greet_action == Action::Drop) drop(Failure::Pregreet);
}

void Session::dnsbl_reply(DnsblSubscription& which, const DnsblReply& reply) {
    const DnsblCheck::Answer answer = dnsbl_.answer(config().dnsbl_sites, which, reply);
    if (!answer.zone) return;
    dnsbl_answered(*answer.zone, reply.status);
    // Every zone has answered: the verdict is all that is left to keep.
    const bool complete = dnsbl_.complete();
    keep_dnsbl_verdict(answer.verdict, complete);
    dnsbl_updated(complete);
}

void Session::dnsbl_updated(bool complete) {
    if ((phase_ == Phase::Enforce || phase_ == Phase::Tarpit) && enforced_ == Failure::Dnsbl) {
        if (dialog_) dialog_->set_reject_reply(reject_reply(Failure::Dnsbl));  // the tarpit's comes later
        return;
    }
    if (phase_ != Phase::GreetWait && phase_ != Phase::DnsblWait) return;
    // A listed client is acted on as soon as its verdict cannot change (docs/design.md, step 5):
    // postscreen waits out the greet wait, which is what caps its rate for listed bots.
    if (config().dnsbl_action != Action::Ignore &&
        (complete ? dnsbl_listed()
                  : dnsbl_.listed_for_sure(config().dnsbl_sites, dnsbl_score_, config().dnsbl_threshold))) {
        return conclude_screening();
    }
    bool allowlisted = config().dnsbl_allowlist_threshold < 0 && complete &&
                       dnsbl_score_ <= config().dnsbl_allowlist_threshold;
    if (allowlisted || (phase_ == Phase::DnsblWait && complete)) conclude_screening();
}

void Session::dnsbl_answered(const std::string& zone, DnsblReply::Status status) {
    // The latency since the lookups were asked: the deadline is dnsbl.timeout after that.
    const uint64_t asked_at = dnsbl_deadline() - static_cast<uint64_t>(config().dnsbl_timeout.count());
    worker_.metrics().dnsbl_answer(zone, status, uv_now(worker_.loop()) - asked_at);
}

void Session::keep_dnsbl_verdict(const DnsblVerdict& verdict, bool settled) {
    dnsbl_top_site_ = kNoSite;
    for (size_t i = 0; i < config().dnsbl_sites.size() && i < kNoSite; ++i) {
        if (&config().dnsbl_sites[i].zone == verdict.top) dnsbl_top_site_ = static_cast<uint16_t>(i);
    }
    dnsbl_score_ = verdict.score;
    dnsbl_failed_ = verdict.any_failed;
    if (!settled) return;
    // The deadline is over with the check: its word holds the TTL from now on (the
    // smallest TTL matters only to a settled verdict's cached pass).
    dnsbl_time_.min_ttl = verdict.min_ttl.value_or(0);
    dnsbl_has_ttl_ = verdict.min_ttl.has_value();
    dnsbl_.finish();
}

void Session::expire_dnsbl() {
    const DnsblVerdict verdict = dnsbl_.expire(config().dnsbl_sites, [this](const std::string& zone) {
        dnsbl_answered(zone, DnsblReply::Status::Failed);
    });
    keep_dnsbl_verdict(verdict, true);
}

DnsblVerdict Session::dnsbl_verdict() const {
    DnsblVerdict verdict;
    verdict.score = dnsbl_score_;
    verdict.any_failed = dnsbl_failed_;
    if (dnsbl_has_ttl_) verdict.min_ttl = dnsbl_time_.min_ttl;
    if (dnsbl_top_site_ != kNoSite) verdict.top = &config().dnsbl_sites[dnsbl_top_site_].zone;
    return verdict;
}

void Session::on_greet_wait_over() {
    if (dnsbl_.active()) {
        uint64_t now = uv_now(worker_.loop());
        if (now < dnsbl_deadline()) {
            enter(Phase::DnsblWait);
            return arm_timer(Millis(dnsbl_deadline() - now));
        }
        expire_dnsbl();
    }
    conclude_screening();
}

bool Session::dnsbl_listed() const {
    return !config().dnsbl_sites.empty() && dnsbl_verdict().score >= config().dnsbl_threshold;
}

void Session::conclude_screening() {
    timer_.stop();
    const int score = dnsbl_verdict().score;
    const bool listed = dnsbl_listed();
    const bool dnswl = config().dnsbl_allowlist_threshold < 0 && !config().dnsbl_sites.empty() &&
                       score <= config().dnsbl_allowlist_threshold;
    if (listed || dnswl) worker_.events().dnsbl_rank(client_ep_, score);
    if (listed) worker_.metrics().test_failures[static_cast<size_t>(Test::Dnsbl)].add();

    if (pregreet_seen_ && config().greet_action != Action::Ignore) {
        return act_on_failure(Failure::Pregreet, config().greet_action);
    }
    if (listed && config().dnsbl_action != Action::Ignore) return act_on_failure(Failure::Dnsbl, config().dnsbl_action);

    // Failures under `ignore` are logged above and earn no cached pass.
    record_passes(!pregreet_seen_, !listed);
    // A DNSWL-allowlisted client skips the deep tests, as with postscreen's allowlist threshold.
    if (!dnswl && deep_tests_pending()) return start_deep();
    if (!pregreet_seen_ && !listed) worker_.events().pass_new(client_ep_);
    if (dnswl) return hand_off_known_client();
    start_handoff();
}

// ---------------------------------------------------------------- step 6: deep protocol tests

bool Session::deep_tests_pending() const {
    const auto& cached = onward().cached;
    return config().deep_tests_enabled() && !deep_passes_valid(cached ? *cached : TestResults{}, unix_now());
}

void Session::start_deep() {
    enter(Phase::Deep);
    // deep.ehlo_keywords: the configured list, or what the backend offers (auto).
    std::vector<std::string> offer =
        config().deep_ehlo_keywords ? *config().deep_ehlo_keywords : *worker_.backend_offer().offer();
    open_dialog(with_tls_slot(deep_options(config(), std::move(offer), client_ep_.to_string(), tls().server != nullptr)),
                config().command_time_limit);
}

void Session::on_dialog_events(std::vector<DialogEvent> events) {
    for (DialogEvent& e : events) {
        switch (e.kind) {
        case DialogEvent::Kind::Reply:
            if (phase_ == Phase::Tarpit) {
                stutter().queue(e.text, uv_now(worker_.loop()));
                break;
            }
            client_.write(e.text);
            if (!health_check_) arm_timer(config().command_time_limit);
            break;
        case DialogEvent::Kind::Violation:
            worker_.events().violation(e.test, e.text);
            if (phase_ == Phase::Deep && config().deep_action != Action::Ignore) count_failure();
            // deep.action = tarpit: the dialog enforces from now on, and what it says
            // goes out slowly; or, with the tarpit full, the client is dropped.
            if (phase_ == Phase::Deep && config().deep_action == Action::Tarpit && !enter_tarpit()) {
                client_.write(replies::crlf(replies::kDropProtocol));
                close_client_after_flush();
                return finish("dropped");
            }
            break;
        case DialogEvent::Kind::Log: worker_.events().dialog(e.text); break;
        case DialogEvent::Kind::LineStarted:
            if (phase_ == Phase::Tarpit) stutter().line_started(uv_now(worker_.loop()));
            else if (!health_check_) arm_timer(config().command_time_limit);
            break;
        case DialogEvent::Kind::StartTls: start_client_tls(); break;
        case DialogEvent::Kind::Handoff: return tls_first() ? start_tls_first_handoff(e.tx) : on_deep_handoff(e.tx);
        case DialogEvent::Kind::Close:
            // In the tarpit the session ends once the last reply is out (pace_tarpit).
            if (phase_ == Phase::Tarpit) return stutter().close_when_done();
            close_client_after_flush();
            return finish(e.text);
        }
    }
}

// Every output is bounded (docs/design.md, "Bounded output"): the dialog gets room for
// what the client has not yet taken up to Connection::kOutputCap, and the client is not
// read while its replies fill that, or while lines it sent wait for room. Its commands
// wait in its own socket buffers; limits.command_time_limit, restarted by our last
// reply, closes a client that never takes its replies.
void Session::feed_dialog(std::string_view bytes) {
    if (phase_ == Phase::Tarpit) tarpit_dialog();
    on_dialog_events(dialog_->feed(bytes, reply_room()));
    if (phase_ == Phase::Tarpit) return pace_tarpit();
    pace_dialog();
}

bool Session::in_dialog() const {
    return phase_ == Phase::Enforce || phase_ == Phase::Deep || phase_ == Phase::TlsFirst || phase_ == Phase::HealthCheck;
}

void Session::pace_dialog() {
    // The greylist's store has the client's RCPT: nothing more is read until it answers.
    if (greylist_pending_) return client_.stop_reading();
    while (in_dialog() && dialog_->has_unhandled_lines() && !client_.output_full()) {
        on_dialog_events(dialog_->feed({}, reply_room()));
    }
    if (phase_ == Phase::Tarpit) return pace_tarpit();  // deep.action = tarpit took it there
    if (!in_dialog()) return;
    if (dialog_->has_unhandled_lines() || client_.output_full()) client_.stop_reading();
    else client_.start_reading();
}

// Never 0 while the output is not full, so that each feed in pace_dialog answers a line.
// The tarpit answers one line at a time, each once the last reply is out, so that it
// keeps one reply at most.
size_t Session::reply_room() const {
    if (phase_ == Phase::Tarpit) return 1;
    return client_.output_full() ? 0 : Connection::kOutputCap - client_.pending_bytes();
}

void Session::close_client_after_flush() {
    client_.close_after_flush(reset_note(client_ep_.to_string()));
}

// A peer that has not taken what was queued for it kFlushDeadlineMs after its session
// closed it: its socket is reset, said once in the log.
Connection::ResetNote Session::reset_note(std::string who) const {
    return [&events = worker_.events(), who = std::move(who)](size_t unsent) {
        events.reset_after_close(who, unsent, Connection::kFlushDeadlineMs);
    };
}

// Greylisting (edge/greylist.h; docs/design.md, "Edge defences"): the RCPT that would
// hand off is an attempt of its triplet, unless the client has a greylist pass, which
// this handoff then renews (postgrey's auto-allowlist lasts while the client keeps
// coming back).
void Session::on_deep_handoff(const SmtpTransaction& tx) {
    if (!config().greylist_enable) return start_deep_handoff(tx);
    if (const auto& cached = onward().cached; cached && cached->passed(Test::Greylist, unix_now())) {
        greylist_passed_ = true;
        return start_deep_handoff(tx);
    }
    const GreylistRules rules = config().greylist_rules();
    const std::string triplet = greylist_triplet(client_ep_, rules.network_prefix, tx.mail_from, tx.rcpt_to);
    greylist_pending_ = true;
    client_.stop_reading();
    worker_.greylist().attempt(triplet, rules, unix_now_ms(),
                               [this, alive = worker_.liveness(*this), tx](GreylistOutcome outcome) {
        if (!alive || phase_ != Phase::Deep || !greylist_pending_) return;
        greylist_pending_ = false;
        on_greylist_outcome(tx, outcome);
    });
}

void Session::on_greylist_outcome(const SmtpTransaction& tx, GreylistOutcome outcome) {
    if (outcome == GreylistOutcome::Unanswered) {
        // The store could not tell (Redis down or slow, logged once per outage): the
        // mail goes on, and no greylist pass is cached for it.
        worker_.metrics().greylist_unanswered.add();
        return start_deep_handoff(tx);
    }
    if (!greylist_refuses(outcome)) {
        if (outcome == GreylistOutcome::Retried) worker_.metrics().greylist_passed.add();
        greylist_passed_ = true;
        return start_deep_handoff(tx);
    }
    worker_.metrics().greylisted.add();
    // The client stays in the dialog with its transaction open: it may QUIT, or try
    // another recipient, whose triplet may already have passed.
    on_dialog_events(dialog_->refuse_handoff(replies::kGreylisted));
    if (phase_ == Phase::Deep) feed_dialog({});
}

void Session::start_deep_handoff(const SmtpTransaction& tx) {
    start_handoff({tx.replay_lines(), tx.helo_name, tx.helo_verb == "EHLO" ? "ESMTP" : "SMTP", false});
}

// ---------------------------------------------------------------- TLS before the backend

// A client handed off at once (PASS OLD, access permit, DNSWL) would cost a backend
// connection and two backend round trips (its greeting, and an RSET after the
// handshake) before it says anything the backend must hear; one that only does its
// handshake, or fails it, never needs the backend at all (docs/design.md, "TLS").
// Without tls.cert nothing is gained: the handoff is at once, as HAProxy's.
void Session::hand_off_known_client() {
    if (tls().server && config().tls_before_backend) return start_tls_first();
    start_handoff();
}

void Session::start_tls_first() {
    enter(Phase::TlsFirst);
    // Our 220 alone, or the end of the greet wait's "220-" (a DNSWL pass). The client may
    // go on in clear with the backend: offer what the relay would show of the backend's
    // EHLO reply (screen/ehlo_keywords.h), or deep.ehlo_keywords when the admin lists them.
    std::vector<std::string> offer =
        config().deep_ehlo_keywords ? *config().deep_ehlo_keywords : *worker_.backend_offer().tls_first_offer();
    open_dialog(with_tls_slot(tls_first_options(config(), std::move(offer), client_ep_.to_string())),
                config().command_time_limit);
}

// The backend gets the HELO/EHLO from before TLS, if there was one and no handshake
// since (RFC 3207 §4.2 forgets it), and its greeting and reply are swallowed; then the
// client's command, which the backend answers. The backend never saw the dialog, so
// no RSET is owed after a handshake.
void Session::start_tls_first_handoff(const SmtpTransaction& tx) {
    BackendHandoff::Replay replay{};
    if (!tx.helo_verb.empty()) replay.lines.push_back(tx.helo_verb + " " + tx.helo_name + "\r\n");
    replay.helo = tx.helo_name;
    replay.proto = tx.helo_verb == "EHLO" ? "ESMTP" : "SMTP";
    replay.client_answered = true;
    start_handoff(std::move(replay));
}

void Session::record_deep_passes() {
    const bool deep_pass = dialog_->passed();  // a failure under `ignore` earns no pass
    if (!deep_pass && !greylist_passed_) return;
    TestResults record = onward().cached ? *onward().cached : TestResults{};
    const int64_t now = unix_now();
    if (deep_pass) {
        const int64_t until = now + config().cache_deep_ttl.count() / 1000;
        if (config().deep_pipelining) record[Test::Pipelining] = until;
        if (config().deep_non_smtp_command) record[Test::NonSmtp] = until;
        if (config().deep_bare_newline) record[Test::BareNewline] = until;
    }
    if (greylist_passed_) record[Test::Greylist] = now + config().greylist_ttl.count() / 1000;
    worker_.cache().store(client_ip(), record);
    if (deep_pass) worker_.events().pass_new(client_ep_);
}

void Session::record_passes(bool pregreet_ok, bool dnsbl_ok) {
    TestResults record = onward().cached ? *onward().cached : TestResults{};
    const int64_t now = unix_now();
    if (pregreet_ok) record[Test::Pregreet] = now + config().cache_pregreet_ttl.count() / 1000;
    dnsbl_ok = dnsbl_ok && !config().dnsbl_sites.empty() && !dnsbl_verdict().any_failed;
    if (dnsbl_ok) {
        // The pass lasts as long as the DNS answers do, within the configured bounds.
        int64_t ttl = dnsbl_verdict().min_ttl.value_or(0);
        ttl = std::clamp<int64_t>(ttl, config().cache_dnsbl_min_ttl.count() / 1000,
                                  config().cache_dnsbl_max_ttl.count() / 1000);
        record[Test::Dnsbl] = now + ttl;
    }
    if (pregreet_ok || dnsbl_ok) worker_.cache().store(client_ip(), record);
    onward().cached = std::make_unique<TestResults>(record);
}

// ---------------------------------------------------------------- step 7: actions

std::string Session::reject_reply(Failure failure) const {
    switch (failure) {
    case Failure::Dnsbl: {
        std::string zone(dnsbl_verdict().top_zone());
        if (auto it = config().dnsbl_reply_map.find(zone); it != config().dnsbl_reply_map.end()) zone = it->second;
        return replies::dnsbl_reject(client_ip(), zone);
    }
    case Failure::AccessList: return std::string(replies::kAccessReject);
    case Failure::Ban: return std::string(replies::kBannedReject);
    default: return std::string(replies::kProtocolError);
    }
}

void Session::act_on_failure(Failure failure, Action action) {
    count_failure();
    if (action == Action::Drop) return drop(failure);
    if (action == Action::Tarpit) return start_tarpit(failure);
    start_enforce(failure);
}

void Session::drop(Failure failure) {
    switch (failure) {
    case Failure::Dnsbl: client_.write(replies::crlf(replies::kDropDnsbl)); break;
    case Failure::AccessList: client_.write(replies::crlf(replies::kDropAccess)); break;
    case Failure::Ban: client_.write(replies::crlf(replies::kBanned)); break;
    default: client_.write(replies::crlf(replies::kDropProtocol)); break;
    }
    close_client_after_flush();
    finish(failure == Failure::Ban ? "banned" : "dropped");
}

void Session::start_enforce(Failure failure) {
    enter(Phase::Enforce);
    enforced_ = failure;
    client_.write(config().greeting);
    dialog_ = std::make_unique<ClientDialog>(with_tls_slot(
        enforce_options(config(), client_ep_.to_string(), tls().server != nullptr, reject_reply(failure))));
    arm_timer(config().command_time_limit);
    client_.start_reading();
}

// The tarpit (edge/tarpit.h; docs/design.md, "Edge defences"): OpenBSD spamd's
// stutter. The client gets the enforce dialog (without STARTTLS), and each reply goes
// out one byte per tarpit.delay from the session's one deadline, which also keeps
// limits.command_time_limit. While a reply is going out the client is not read: what it
// sends waits in its socket buffers, not in ours. A full tarpit drops the client.
void Session::start_tarpit(Failure failure) {
    if (!enter_tarpit()) return drop(failure);
    enforced_ = failure;
    // Given out from the configuration's one copy (the session holds the configuration).
    stutter().queue_lasting(config().greeting, uv_now(worker_.loop()));
    pace_tarpit();
}

// The dialog is made when the client first says something (or its time is up): a bot
// that waits, or gives up during the greeting, never costs one.
SmtpDialog& Session::tarpit_dialog() {
    if (!dialog_) {
        dialog_ = std::make_unique<ClientDialog>(
            enforce_options(config(), client_ep_.to_string(), false, reject_reply(enforced_)));
    }
    return *dialog_;
}

bool Session::enter_tarpit() {
    if (!worker_.tarpit().take(config().tarpit_max_connections)) {
        worker_.metrics().tarpit_full.add();
        return false;
    }
    tarpit_slot_ = true;
    enter(Phase::Tarpit);
    worker_.events().tarpit(client_ep_);
    // The tarpit never hands off: what was kept for the handoff (a name lookup still in
    // flight too) gives its room to the Stutter.
    route_.onward.~Onward();
    tarpitting_ = true;
    new (&route_.stutter) Stutter(config().tarpit_delay, config().command_time_limit, uv_now(worker_.loop()));
    client_.stop_reading();
    return true;
}

// After every change: the next line once the last reply is out, the end once the last
// reply of a finished dialog is, and the session's deadline for the next byte (in the
// tarpit's line of the loop's timers: each byte one delay after the last, in the order
// asked, so no heap to re-sort at every octet) or for the time limit (in the heap,
// re-armed once a reply, not once an octet).
void Session::pace_tarpit() {
    if (phase_ != Phase::Tarpit) return;
    Stutter& stutter = this->stutter();
    if (!stutter.giving_out() && !stutter.closing() && dialog_ && dialog_->has_unhandled_lines()) {
        on_dialog_events(dialog_->feed({}, reply_room()));
        if (phase_ != Phase::Tarpit) return;
    }
    if (!stutter.giving_out() && stutter.closing()) {
        close_client_after_flush();
        return finish("tarpit");
    }
    if (stutter.giving_out() || stutter.closing()) client_.stop_reading();
    else client_.start_reading();
    const uint64_t now = uv_now(worker_.loop());
    const uint64_t at = stutter.wake_at();
    if (stutter.byte_next()) return timer_.start_in_line(stutter.delay_ms(), at);
    arm_timer(Millis(at > now ? at - now : 0));
}

void Session::on_tarpit_timer() {
    // A byte the kernel did not take waits in the connection's queue: none goes on top.
    const Stutter::Tick tick = stutter().tick(uv_now(worker_.loop()), client_.pending_bytes() > 0);
    if (tick.step == Stutter::Step::TimeLimit) return end_tarpit_at_time_limit();
    if (tick.step == Stutter::Step::Byte) client_.write(std::string_view(&tick.byte, 1));
    pace_tarpit();
}

// limits.command_time_limit ends a tarpitted session as it ends an enforced one
// (COMMAND TIME LIMIT, 421), at once: the 421 goes whole, and what was left of a reply
// the client did not take is not given out.
void Session::end_tarpit_at_time_limit() {
    if (client_.pending_bytes() > 0) worker_.events().replies_unread(client_ep_, client_.pending_bytes());
    for (const DialogEvent& e : tarpit_dialog().time_limit_exceeded()) {
        if (e.kind == DialogEvent::Kind::Log) worker_.events().dialog(e.text);
        else if (e.kind == DialogEvent::Kind::Reply) client_.write(e.text);
    }
    close_client_after_flush();
    finish("tarpit");
}

// ---------------------------------------------------------------- step 8: handoff and relay

void Session::start_name_lookup() {
    // The lookup goes with the NameLookup: the session never hears from it once the
    // tarpit has taken that room.
    auto& lookup = onward().name = std::make_unique<NameLookup>();
    lookup->resolver = worker_.resolver();
    lookup->lookup = lookup->resolver->lookup_verified_name(client_ep_, [this](const std::string& name) {
        NameLookup& found = *onward().name;
        found.pending = false;
        found.name = name;
        if (phase_ == Phase::Handoff && found.handoff_waiting) {
            auto replay = std::move(*found.handoff_waiting);
            found.handoff_waiting.reset();
            connect_backend(std::move(replay));
        }
    });
}

void Session::start_handoff(BackendHandoff::Replay replay) {
    enter(Phase::Handoff);
    client_.stop_reading();  // the kernel holds what the client sends until the relay starts
    timer_.stop();
    // XCLIENT names the client: wait for the reverse lookup (bounded by dnsbl.timeout),
    // usually long done by now.
    relay_ = std::make_unique<Relay>(*this);
    if (const auto& name = onward().name; name && name->pending) {
        name->handoff_waiting = std::move(replay);
        return;
    }
    connect_backend(std::move(replay));
}

void Session::connect_backend(BackendHandoff::Replay replay) {
    arm_timer(config().backend_connect_timeout);
    relay_->handoff = std::make_unique<BackendHandoff>(worker_.loop(), worker_.read_buffer(),
                                                       worker_.handshake_steps(), config(), tls().backend,
                                                       config().hostname, *relay_);
    ++worker_.backend_legs();
    const Onward& on = onward();
    relay_->handoff->start(client_ep_, on.local, on.name ? on.name->name : std::string(), std::move(replay));
}

// What the backend answered this client's replayed EHLO is what it offers a client
// like this one now: deep.ehlo_keywords = auto offers that from here on.
void Session::backend_ehlo(std::string reply) {
    if (!config().deep_ehlo_keywords) worker_.backend_offer().learn(reply, "a replayed client's EHLO");
}

void Session::handoff_failed(std::string why) {
    if (phase_ != Phase::Handoff) return;
    worker_.events().backend_unavailable(client_ep_, why);
    client_.write(replies::crlf(replies::kBackendUnavailable));
    close_client_after_flush();
    finish("backend-unavailable");
}

// The backend refuses this client: its reply goes to the client as it is, like any
// greeting. After our "220-" line (the greet wait) the client then reads "220-host" and
// the backend's "421 ..." or "554 ..." as one reply whose lines carry different codes,
// which RFC 5321 4.2.1 does not allow. It is still the best shape available: the "220-"
// cannot be taken back, ending the reply with a 220 would tell the client it may go on
// (and turn a 5xx into a later, unrelated error), and holding the refusal for the
// client's first command delays it and gives it to EHLO. postscreen itself sends its
// "521" after the same "220-" line, and SMTP clients that read the code of the final
// line (Postfix, sendmail, Python's smtplib) see the backend's code; the README says
// which clients read the first line instead. A known client (PASS OLD, allowlisted)
// gets no "220-" line and sees a well-formed reply.
void Session::handoff_refused(std::string reply) {
    if (phase_ != Phase::Handoff) return;
    worker_.events().backend_refused(client_ep_, reply);
    backend_refused_ = true;
    handoff_ready(std::move(reply));
}

void Session::handoff_ready(std::string reply) {
    if (phase_ != Phase::Handoff) return;
    // Without deep tests: after our "220-" line the backend's 220 lines finish the same
    // multi-line reply. After them: the backend's answer to the client's RCPT. TLS
    // before the backend: the client has its answers already; a refusal answers the
    // command that asked for the backend, which then is not sent.
    const bool answered = tls_first();
    if (!answered || backend_refused_) client_.write(reply);
    if (dialog_) {  // the deep tests and TLS before the backend hand off with a dialog behind them
        if (!answered) record_deep_passes();
        std::string rest = dialog_->take_unprocessed();
        if (answered && backend_refused_) rest.erase(0, rest.find('\n') + 1);
        if (!rest.empty()) {
            onward().early_bytes = std::make_unique<std::string>(std::move(rest));
        }
    }
    start_relay();
}

void Session::start_relay() {
    enter(Phase::Relay);
    relay_->backend = relay_->handoff->take_connection();
    relay_->backend->set_events(*this);
    if (const TlsStream* tls = relay_->backend->tls()) worker_.events().backend_tls_established(config().backend_address, *tls);
    if (size_t dropped = relay_->handoff->discarded_after_starttls()) {
        worker_.events().backend_starttls_injection(config().backend_address, dropped);
    }
    RelayFilter::Options options;
    // With XCLIENT the backend trusts our address; TLS between client and backend
    // would hide the client's commands from the filter that keeps XCLIENT out. With
    // tls.passthrough = off the admin wants the filter to see every session (the README,
    // "SMTP smuggling"): the backend's STARTTLS is hidden the same way.
    options.strip_starttls = config().handoff == Handoff::Xclient || config().handoff == Handoff::None ||
                             !config().tls_passthrough;
    options.bare_lf = config().smuggling_bare_lf;
    options.terminate_starttls = tls().server != nullptr;
    options.tls_already_active = client_.tls() != nullptr;
    options.in_transaction = relay_->handoff->transaction_open();
    options.take_tls_slot = [this] { return take_tls_slot(); };
    relay_->filter = std::make_unique<RelayFilter>(options);
    relay_->last_activity = uv_now(worker_.loop());
    arm_timer(config().backend_idle_timeout);
    relay_->backend->start_reading();
    // A client whose close_notify came with its last deep-test commands has nothing more
    // to say: what it sent goes to the backend, then its half-close.
    if (!client_eof_) client_.start_reading();
    if (auto early = std::move(onward().early_bytes)) relay_from_client(*early);
    if (client_eof_) relay_half_closes();
}

void Session::relay_from_client(std::string_view bytes) {
    std::string to_backend;
    std::string to_client;
    relay_->filter->from_client(bytes, to_backend, to_client);
    relay_output(to_client, to_backend);
}

void Session::relay_from_backend(std::string_view bytes) {
    std::string to_client;
    std::string to_backend;
    relay_->filter->from_backend(bytes, to_client, to_backend);
    relay_output(to_client, to_backend);
}

void Session::relay_output(std::string_view to_client, std::string_view to_backend) {
    if (relay_->filter->abandon_backend()) {
        // SMTP smuggling defence (README, "SMTP smuggling"; docs/design.md, "Hostile
        // input"): the client's message had a bare LF/CR or an over-long line. The
        // backend never sees an end of data for it, so closing its connection abandons
        // the half-sent message; the client gets the 550 and a 421.
        client_.write(to_client);
        relay_->backend->close();
        close_client_after_flush();
        worker_.events().message_refused(client_ep_, refusal_text(relay_->filter->refusal()));
        return finish("bad-message");
    }
    relay_->backend->write(to_backend);
    client_.write(to_client);
    if (relay_->filter->start_tls_now() && !client_.tls()) {
        // The 220 went out in clear; what the client pipelined after its STARTTLS was
        // dropped by the filter (CVE-2011-0411 class).
        if (size_t dropped = relay_->filter->discarded_after_starttls()) worker_.events().starttls_injection(client_ep_, dropped);
        start_client_tls();
    }
    update_backpressure();
    if (client_eof_ || backend_eof_) relay_half_closes();
}

// Each side is read only while the other side's kernel buffer takes what we write, so
// a fast sender and a slow receiver never make us hold more than one read per direction.
// Behind a DATA the client is stopped only once it has sent something that the filter
// must hold: a client that waits for the 354, as nearly all do, costs no epoll_ctl.
// A side that has half-closed is never read again: there is nothing more to read.
void Session::update_backpressure() {
    if (phase_ != Phase::Relay) return;
    const bool handshaking = client_.tls_handshaking();
    const bool holding = relay_->filter->client_held() && relay_->filter->held_bytes() > 0;
    if (client_eof_) client_.stop_reading();
    else if (handshaking || (relay_->backend->pending_bytes() == 0 && !holding && !client_.output_full())) client_.start_reading();
    else client_.stop_reading();
    // The backend waits while the client's handshake runs (nothing may reach the client
    // in clear after the 220 to its STARTTLS).
    if (backend_eof_) relay_->backend->stop_reading();
    else if (client_.pending_bytes() == 0 && !relay_->filter->start_tls_now()) relay_->backend->start_reading();
    else relay_->backend->stop_reading();
}

// ---------------------------------------------------------------- half-close

// A half-close is not a close (docs/design.md, "Half-close"): Exim writes its last ".",
// a pipelined QUIT, shuts its side down and only then reads the 250 and the 221. Each
// direction ends on its own: its sender's EOF is passed on once everything before it is
// written; the session ends once both have ended (or on a reset, or the idle timeout).
void Session::relay_half_closes() {
    if (phase_ != Phase::Relay) return;
    const bool client_handshaking = client_.tls_handshaking();
    // After the backend's EOF the SMTP dialogue is over once its 221 has answered the
    // client's QUIT, or once the client is owed a reply that can no longer come (a backend
    // that died mid-dialogue, or a command sent after the backend's half-close): the
    // client then gets what is queued and the close, not a wait for its own EOF.
    // A backend that refused the client at its greeting and closed (anvil's 421) has
    // ended the dialogue too.
    const bool dialogue_over =
        backend_eof_ && (relay_->filter->quit_answered() || relay_->filter->replies_owed() > 0 || backend_refused_);
    // Otherwise the session ends once both directions are done. A client that half-closed
    // can never finish its TLS handshake, and no half-close can be passed on to a client
    // inside one.
    if ((client_eof_ && backend_eof_) || dialogue_over || (client_handshaking && (client_eof_ || backend_eof_))) {
        return end_relay();
    }
    // Held client bytes are whole commands (a pipelined QUIT behind a DATA): they go to
    // the backend when its reply releases them, and the half-close after them.
    // Over TLS, the connection sends its close_notify first.
    if (client_eof_ && !relay_->backend->write_shut() && relay_->filter->held_for_backend() == 0) relay_->backend->shutdown_after_flush();
    if (backend_eof_ && !client_.write_shut()) client_.shutdown_after_flush();
}

// Whatever one side still has queued reaches the other before it is closed: a backend
// that dies mid-DATA leaves the client with a closed connection and no 250. Each TLS leg
// ends with a close_notify (Connection::close_after_flush).
void Session::end_relay() {
    relay_->backend->close_after_flush(reset_note("backend " + config().backend_address.ip_port()));
    close_client_after_flush();
    finish(backend_refused_ ? "backend-refused" : "handoff");
}

void Session::on_client_eof() {
    client_eof_ = true;
    client_.stop_reading();
    switch (phase_) {
    case Phase::Relay: return relay_half_closes();
    case Phase::Handoff: return;  // the relay starts with it (a close_notify read with the deep dialog)
    case Phase::HealthCheck:
    case Phase::Enforce:
    case Phase::Deep:
    case Phase::TlsFirst:
        // The dialogs answer every line as it arrives: the replies to all the client
        // sent before its half-close are queued, and go out before the close.
        close_client_after_flush();
        return finish(phase_ == Phase::Enforce ? "rejected" : "hangup");
    case Phase::Tarpit:
        // It is read only once its last reply is out: it is owed nothing more.
        close_client_after_flush();
        return finish("tarpit");
    case Phase::GreetWait:
    case Phase::DnsblWait: worker_.events().hangup(client_ep_, elapsed()); break;
    default: break;
    }
    finish("hangup");
}

void Session::on_backend_eof() {
    if (phase_ != Phase::Relay) return;
    backend_eof_ = true;
    relay_->backend->stop_reading();
    relay_half_closes();
}

// ---------------------------------------------------------------- events

void Session::on_data(Connection& conn, std::string_view bytes) {
    if (phase_ == Phase::Done) return;
    if (&conn == &client_) return on_client_bytes(bytes);
    relay_->last_activity = uv_now(worker_.loop());
    relay_from_backend(bytes);
}

// ---------------------------------------------------------------- the client leg in TLS

// The connection does the handshake and the records (docs/design.md, "Transport"); the
// session starts it, bounds it with tls.handshake_timeout, and goes on in plaintext.
// Asked by the dialog or the relay right before our 220 to a STARTTLS. A refusal is
// logged with the bound's name, so that an admin who sees 454s knows which key to raise.
bool Session::take_tls_slot() {
    HandshakeSlots::Slot& slot = phase_ == Phase::Relay ? relay_->tls_slot : dialog_->tls_slot;
    slot = worker_.tls_handshakes().take(config().tls_max_pending_handshakes);
    if (!slot) worker_.events().tls_handshakes_busy(client_ep_, config().tls_max_pending_handshakes);
    return static_cast<bool>(slot);
}

void Session::give_back_tls_slot() {
    if (dialog_) dialog_->tls_slot.reset();
    if (relay_) relay_->tls_slot.reset();
}

DialogOptions Session::with_tls_slot(DialogOptions options) {
    options.take_tls_slot = [this] { return take_tls_slot(); };
    return options;
}

void Session::start_client_tls() {
    std::string error;
    auto stream = TlsStream::server(tls().server, &error);
    if (!stream) {
        worker_.events().tls_start_failed(client_ep_, error);
        close_client_after_flush();
        return finish("tls-failed");
    }
    arm_timer(config().tls_handshake_timeout);
    client_.start_tls(std::move(stream), worker_.handshake_steps(), config().tls_handshake_nice);
}

void Session::on_tls_ready(Connection& conn) {
    if (&conn == &client_) give_back_tls_slot();
    if (phase_ == Phase::Done || &conn != &client_) return;
    worker_.events().tls_established(client_ep_, *client_.tls());
    if (phase_ == Phase::Deep || phase_ == Phase::Enforce || phase_ == Phase::TlsFirst) {
        dialog_->tls_established();
        arm_timer(config().command_time_limit);
    } else if (phase_ == Phase::Relay) {
        // The backend's RSET (RFC 3207 §4.2) goes before anything the client sends in TLS.
        std::string to_client;
        std::string to_backend;
        relay_->filter->tls_established(to_client, to_backend);
        relay_->backend->write(to_backend);
        client_.write(to_client);
        relay_->last_activity = uv_now(worker_.loop());
        arm_timer(config().backend_idle_timeout);
        update_backpressure();
    }
}

void Session::on_tls_failed(Connection& conn, TlsFailure failure) {
    if (&conn == &client_) give_back_tls_slot();
    if (phase_ == Phase::Done) return;
    const std::string& error = conn.tls()->error();
    if (&conn != &client_) {  // the backend leg, in the relay: the handoff did its handshake
        worker_.events().backend_tls_error(config().backend_address, error);
        return on_socket_error(conn, UV_EPROTO);
    }
    switch (failure) {
    case TlsFailure::Handshake:
        worker_.events().tls_handshake_failed(client_ep_, error);
        close_client_after_flush();  // with the alert
        return finish("tls-failed");
    case TlsFailure::Overflow:
        worker_.events().tls_error(client_ep_, error, client_.tls_handshaking());
        return finish("tls-failed");
    case TlsFailure::Record:
        worker_.events().tls_error(client_ep_, error, false);
        return on_socket_error(conn, UV_EPROTO);
    }
}

void Session::on_client_bytes(std::string_view bytes) {
    switch (phase_) {
    case Phase::GreetWait:
    case Phase::DnsblWait: return on_pregreet(bytes);
    case Phase::HealthCheck:
    case Phase::Enforce:
    case Phase::Tarpit:
    case Phase::Deep:
    case Phase::TlsFirst: return feed_dialog(bytes);
    case Phase::Relay:
        relay_->last_activity = uv_now(worker_.loop());
        return relay_from_client(bytes);
    default: return;  // not reading in the other phases
    }
}

void Session::on_peer_eof(Connection& conn) {
    if (phase_ == Phase::Done) return;
    if (&conn == &client_) return on_client_eof();
    on_backend_eof();
}

void Session::on_socket_error(Connection& /*conn*/, int /*status: a reset or a failed write*/) {
    if (phase_ == Phase::Done) return;
    // The broken side can take nothing more; the other still gets what is queued for it.
    if (phase_ == Phase::Relay) return end_relay();
    if (phase_ == Phase::GreetWait || phase_ == Phase::DnsblWait) {
        worker_.events().hangup(client_ep_, elapsed());
    }
    finish(phase_ == Phase::Enforce ? "rejected" : phase_ == Phase::Tarpit ? "tarpit" : "hangup");
}

void Session::on_drained(Connection& conn) {
    if (phase_ == Phase::Done) return;
    if (&conn == &client_ && in_dialog()) return pace_dialog();
    update_backpressure();
}

void Session::on_connected(Connection&, int) {}  // only the handoff connects, and it listens itself

void Session::arm_timer(Millis after) {
    timer_.start(static_cast<uint64_t>(std::max<int64_t>(after.count(), 0)));
}

void Session::on_deadline() {
    if (client_.tls_handshaking()) {
        worker_.events().tls_handshake_timeout(client_ep_);
        return finish("tls-timeout");
    }
    switch (phase_) {
    case Phase::HealthCheck: return finish("timeout");
    case Phase::Tarpit: return on_tarpit_timer();
    case Phase::GreetWait: return on_greet_wait_over();
    case Phase::DnsblWait:
        if (dnsbl_.active()) expire_dnsbl();
        return conclude_screening();
    case Phase::Enforce:
    case Phase::Deep:
    case Phase::TlsFirst:
        // A greylist store that never answered: the session cannot go on without it.
        if (greylist_pending_) return finish("timeout");
        if (client_.pending_bytes() > 0) {  // the kernel's buffers for it are full
            worker_.events().replies_unread(client_ep_, client_.pending_bytes());
        }
        return on_dialog_events(dialog_->time_limit_exceeded());
    case Phase::Handoff: return handoff_failed("no greeting within backend.connect_timeout");
    case Phase::Relay: {
        uint64_t idle_ms = static_cast<uint64_t>(config().backend_idle_timeout.count());
        uint64_t quiet = uv_now(worker_.loop()) - relay_->last_activity;
        if (quiet < idle_ms) return arm_timer(Millis(idle_ms - quiet));
        return finish("idle-timeout");
    }
    default: return;
    }
}

// ---------------------------------------------------------------- step 9: close

void Session::abort(std::string_view outcome) { finish(outcome); }

void Session::finish(std::string_view outcome) {
    if (phase_ == Phase::Done) return;
    enter(Phase::Done);
    if (!health_check_) worker_.events().disconnect(client_ep_, outcome, elapsed());
    timer_.stop();
    client_.close();
    if (relay_ && relay_->backend) relay_->backend->close();
    if (relay_ && relay_->handoff) --worker_.backend_legs();
    if (admitted_) worker_.limits().release(client_ep_);
    admitted_ = false;
    if (tarpit_slot_) {
        tarpit_slot_ = false;
        worker_.tarpit().give_back();
    }
    // Objects whose callback may be on the stack right now (the DNSBL check, the handoff)
    // are destroyed with the session, after this callback returns.
    worker_.client_done(this);
}

// The gauge of sessions by step follows every change of phase_. The accept handshake
// counted the connection in and left it in the first step, which the session takes over.
void Session::enter(Phase next) {
    static_assert(static_cast<int>(Phase::Done) == static_cast<int>(SessionPhase::Count),
                  "Session::Phase and SessionPhase list the same steps");
    static_assert(static_cast<int>(Phase::Accepted) == static_cast<int>(SessionPhase::ProxyHeader),
                  "a session starts where AcceptHandshake left the gauge");
    worker_.metrics().enter_phase(static_cast<SessionPhase>(phase_), static_cast<SessionPhase>(next));
    phase_ = next;
}

Millis Session::elapsed() const {
    return Millis(static_cast<uint32_t>(static_cast<uint32_t>(uv_now(worker_.loop())) - started_at_));
}

uint64_t Session::dnsbl_deadline() const {
    const uint64_t now = uv_now(worker_.loop());
    return now - static_cast<uint64_t>(elapsed().count()) + dnsbl_time_.due_ms;
}

}  // namespace smtpscreen
