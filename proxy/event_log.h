#pragma once
// Every log line (docs/design.md, "Log lines"), one function per event, so postscreen's
// wording (which pflogsumm and fail2ban's postfix filter parse) lives in one place. The
// same function counts the event for the metrics endpoint, so a counter and its log
// line never disagree.
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/duration.h"
#include "core/log_batch.h"
#include "edge/ban.h"
#include "edge/connection_rates.h"
#include "proxy/metrics.h"

namespace smtpscreen {

class TlsStream;

// "0.06" seconds, as postscreen prints elapsed times.
std::string format_elapsed(Millis elapsed);

class EventLog {
public:
    EventLog(LogBatch& log, WorkerMetrics& metrics) : log_(log), metrics_(metrics) {}

    void connect(const Endpoint& client, const Endpoint& local);
    void pregreet(const Endpoint& client, size_t bytes, Millis after, std::string_view text);
    void hangup(const Endpoint& client, Millis after);
    void dnsbl_rank(const Endpoint& client, int rank);
    void pass_new(const Endpoint& client);
    void pass_old(const Endpoint& client);
    void allowlisted(const Endpoint& client);
    void denylisted(const Endpoint& client);
    void too_many_connections(const Endpoint& client, std::string_view which);
    // A connection refused by a rate limit: counted each time, logged when verdict.first.
    void rate_limited(const Endpoint& client, const RateVerdict& verdict);
    // ban.after's N-th failure banned the client: logged once per ban.
    void banned(const Endpoint& client, const Ban& ban);
    // A banned client's connection, refused at once: counted, not logged (its
    // DISCONNECT line says "banned").
    void ban_refused(const Endpoint& client);
    void message_refused(const Endpoint& client, std::string_view why);
    void backend_unavailable(const Endpoint& client, std::string_view why);
    // The backend greeted this client with a refusal (reply: the whole greeting).
    void backend_refused(const Endpoint& client, std::string_view reply);
    void proxy_header_error(const Endpoint& peer, std::string_view why);
    void disconnect(const Endpoint& client, std::string_view outcome, Millis duration);
    // A client goes to the tarpit (edge/tarpit.h), after the line of the test it failed.
    void tarpit(const Endpoint& client);

    // The client leg in TLS (docs/design.md, "TLS"), in Postfix smtpd's words where it has some.
    void tls_established(const Endpoint& client, const TlsStream& stream);
    void tls_start_failed(const Endpoint& client, std::string_view why);
    void tls_handshake_failed(const Endpoint& client, std::string_view why);
    void tls_handshake_timeout(const Endpoint& client);
    // A STARTTLS answered 454: `limit` handshakes were in progress.
    void tls_handshakes_busy(const Endpoint& client, int limit);
    // in_handshake: the failure ends a handshake (counted as a failed one).
    void tls_error(const Endpoint& client, std::string_view why, bool in_handshake);
    // Bytes a client pipelined behind its STARTTLS (CVE-2011-0411): thrown away.
    void starttls_injection(const Endpoint& client, size_t bytes);
    // The backend leg in TLS (backend.tls = on), in Postfix smtp's words.
    void backend_tls_established(const Endpoint& backend, const TlsStream& stream);
    void backend_tls_error(const Endpoint& backend, std::string_view why);
    void backend_starttls_injection(const Endpoint& backend, size_t bytes);

    // A client of the enforce or deep dialog that leaves its replies unread (docs/design.md,
    // "Bounded output").
    void replies_unread(const Endpoint& client, size_t unsent);
    // who: "[ip]:port", or "backend [ip]:port".
    void reset_after_close(std::string_view who, size_t unsent, uint64_t deadline_ms);
    // A line the SMTP dialog words itself (NOQUEUE lines, the deep tests' notes).
    void dialog(std::string_view line);
    // A deep test the client failed (test: Test::Count for a violation of no test's).
    void violation(Test test, std::string_view line);

    WorkerMetrics& metrics() { return metrics_; }

private:
    LogBatch& log_;  // this loop's lines (core/log_batch.h)
    WorkerMetrics& metrics_;
};

}  // namespace smtpscreen
