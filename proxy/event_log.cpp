#include "proxy/event_log.h"

#include "proxy/tls_stream.h"
#include "screen/deep_tests.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

namespace smtpscreen {

std::string format_elapsed(Millis elapsed) {
    auto ms = elapsed.count();
    return fmt::format("{}.{:02}", ms / 1000, (ms % 1000) / 10);
}

void EventLog::connect(const Endpoint& client, const Endpoint& local) {
    log_.info("CONNECT from {} to {}", client.to_string(), local.to_string());
}

void EventLog::pregreet(const Endpoint& client, size_t bytes, Millis after, std::string_view text) {
    metrics_.test_failures[static_cast<size_t>(Test::Pregreet)].add();
    log_.info("PREGREET {} after {} from {}: {}", bytes, format_elapsed(after), client.to_string(),
              log_excerpt(text));
}

void EventLog::hangup(const Endpoint& client, Millis after) {
    log_.info("HANGUP after {} from {} in tests before SMTP handshake", format_elapsed(after), client.to_string());
}

void EventLog::dnsbl_rank(const Endpoint& client, int rank) {
    log_.info("DNSBL rank {} for {}", rank, client.to_string());
}

void EventLog::pass_new(const Endpoint& client) {
    metrics_.passes[static_cast<size_t>(Pass::New)].add();
    log_.info("PASS NEW {}", client.to_string());
}

void EventLog::pass_old(const Endpoint& client) {
    metrics_.passes[static_cast<size_t>(Pass::Old)].add();
    log_.info("PASS OLD {}", client.to_string());
}

void EventLog::allowlisted(const Endpoint& client) {
    metrics_.passes[static_cast<size_t>(Pass::Allowlisted)].add();
    log_.info("ALLOWLISTED {}", client.to_string());
}

void EventLog::denylisted(const Endpoint& client) {
    metrics_.test_failures[kAccessFailure].add();
    log_.info("DENYLISTED {}", client.to_string());
}

void EventLog::message_refused(const Endpoint& client, std::string_view why) {
    log_.info("NOQUEUE: reject: DATA from {}: 550 5.5.2 {}; message abandoned, backend connection closed",
              client.to_string(), why);
}

void EventLog::too_many_connections(const Endpoint& client, std::string_view which) {
    log_.warn("NOQUEUE: reject: CONNECT from {}: too many connections ({})", client.to_string(), which);
}

// Worded as postscreen words its limits ("COMMAND TIME LIMIT from [ip]:port"), with the
// key that refused in brackets as the connection count limits name theirs. Counted at
// every refusal, logged at the first of its period (verdict.first), so that a flood
// costs one line per client or network and period, as anvil's warnings do.
void EventLog::rate_limited(const Endpoint& client, const RateVerdict& verdict) {
    const auto scope = verdict.refused.value_or(RateScope::Client);
    metrics_.rate_limited[static_cast<size_t>(scope)].add();
    if (!verdict.first) return;
    if (scope == RateScope::Client) {
        log_.info("RATE LIMIT {} from {} (limits.per_client_rate)", format_rate_limit(verdict.limit),
                  client.to_string());
    } else {
        log_.info("RATE LIMIT {} from {} (limits.per_network_rate, {})", format_rate_limit(verdict.limit),
                  client.to_string(), verdict.key.to_string());
    }
}

// fail2ban's filter matches it (conf/fail2ban): the time is UTC, as the cache tools print it.
void EventLog::banned(const Endpoint& client, const Ban& ban) {
    metrics_.bans.add();
    const auto tt = static_cast<std::time_t>(ban.until_ms / 1000);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char until[32];
    std::strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
    log_.info("BANNED {} until {} after {} failures", client.to_string(), until, ban.failures);
}

void EventLog::ban_refused(const Endpoint&) { metrics_.banned_connections.add(); }

void EventLog::backend_unavailable(const Endpoint& client, std::string_view why) {
    metrics_.backend_connect_failures.add();
    log_.warn("backend unavailable for {}: {}", client.to_string(), why);
}

// Postfix's own wording for a client its greeting refuses, so that fail2ban and
// pflogsumm count it as they would without smtpscreen in front. A multi-line reply is
// logged on one line: the first line, then the text of the next few after their code.
void EventLog::backend_refused(const Endpoint& client, std::string_view reply) {
    metrics_.backend_refusals.add();
    constexpr int kMaxLines = 4;
    std::string text;
    int lines = 0;
    while (!reply.empty()) {
        size_t eol = reply.find('\n');
        std::string_view line = reply.substr(0, eol);
        reply.remove_prefix(eol == std::string_view::npos ? reply.size() : eol + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (++lines > kMaxLines) {
            text += " ...";
            break;
        }
        if (lines > 1) {
            text += ' ';
            line.remove_prefix(std::min<size_t>(line.size(), 4));  // "554-" or "554 "
        }
        text += log_excerpt(line);
    }
    log_.info("NOQUEUE: reject: CONNECT from {}: {}", client.to_string(), text);
}

void EventLog::proxy_header_error(const Endpoint& peer, std::string_view why) {
    log_.warn("PROXY header from {}: {}; closing (listen.proxy_protocol requires a valid header)", peer.to_string(),
              why);
}

void EventLog::disconnect(const Endpoint& client, std::string_view outcome, Millis duration) {
    metrics_.session_ended(outcome);
    log_.info("DISCONNECT {} {} after {}", client.to_string(), outcome, format_elapsed(duration));
}

void EventLog::tarpit(const Endpoint& client) { log_.info("TARPIT {}", client.to_string()); }

void EventLog::tls_established(const Endpoint& client, const TlsStream& stream) {
    metrics_.tls_handshakes[static_cast<size_t>(stream.resumed() ? TlsResult::Resumed : TlsResult::Full)].add();
    log_.info("{}", postfix_tls_log_line(client, stream));
}

void EventLog::tls_start_failed(const Endpoint& client, std::string_view why) {
    log_.warn("cannot start TLS for {}: {}", client.to_string(), why);
}

void EventLog::tls_handshake_failed(const Endpoint& client, std::string_view why) {
    metrics_.tls_handshakes[static_cast<size_t>(TlsResult::Failed)].add();
    log_.warn("SSL_accept error from {}: {}", client.to_string(), why);
}

void EventLog::tls_handshake_timeout(const Endpoint& client) {
    metrics_.tls_handshakes[static_cast<size_t>(TlsResult::Failed)].add();
    log_.warn("TLS handshake timeout for {} (tls.handshake_timeout)", client.to_string());
}

void EventLog::tls_handshakes_busy(const Endpoint& client, int limit) {
    log_.warn("TLS not started for {}: {} handshakes in progress (tls.max_pending_handshakes); answered 454",
              client.to_string(), limit);
}

void EventLog::tls_error(const Endpoint& client, std::string_view why, bool in_handshake) {
    if (in_handshake) metrics_.tls_handshakes[static_cast<size_t>(TlsResult::Failed)].add();
    log_.warn("TLS from {}: {}", client.to_string(), why);
}

void EventLog::starttls_injection(const Endpoint& client, size_t bytes) {
    log_.warn("{} sent {} byte(s) after STARTTLS before the handshake; discarded", client.to_string(), bytes);
}

void EventLog::backend_tls_established(const Endpoint& backend, const TlsStream& stream) {
    log_.info("{}", postfix_tls_backend_log_line(backend, stream));
}

void EventLog::backend_tls_error(const Endpoint& backend, std::string_view why) {
    log_.warn("TLS from backend {}: {}", backend.ip_port(), why);
}

void EventLog::backend_starttls_injection(const Endpoint& backend, size_t bytes) {
    log_.warn("backend {} sent {} byte(s) after its 220 to STARTTLS before the handshake; discarded",
              backend.ip_port(), bytes);
}

void EventLog::replies_unread(const Endpoint& client, size_t unsent) {
    log_.warn("{} did not read its replies ({} byte(s) unsent) within limits.command_time_limit", client.to_string(),
              unsent);
}

void EventLog::reset_after_close(std::string_view who, size_t unsent, uint64_t deadline_ms) {
    log_.warn("{} left {} byte(s) unread {}s after its connection was closed; reset", who, unsent, deadline_ms / 1000);
}

void EventLog::dialog(std::string_view line) { log_.info("{}", line); }

void EventLog::violation(Test test, std::string_view line) {
    if (test != Test::Count) metrics_.test_failures[static_cast<size_t>(test)].add();
    log_.info("{}", line);
}

}  // namespace smtpscreen
