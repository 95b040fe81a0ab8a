#include "proxy/event_log.h"

#include "screen/deep_tests.h"

#include <fmt/format.h>

#include <algorithm>

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

}  // namespace smtpscreen
