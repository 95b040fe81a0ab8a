#pragma once
// Every log line (docs/design.md, "Log lines"), one function per event, so postscreen's
// wording (which pflogsumm and fail2ban's postfix filter parse) lives in one place. The
// same function counts the event for the metrics endpoint, so a counter and its log
// line never disagree.
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/duration.h"
#include "core/log.h"
#include "proxy/metrics.h"

namespace smtpscreen {

// "0.06" seconds, as postscreen prints elapsed times.
std::string format_elapsed(Millis elapsed);

class EventLog {
public:
    EventLog(Logger& log, WorkerMetrics& metrics) : log_(log), metrics_(metrics) {}

    void connect(const Endpoint& client, const Endpoint& local);
    void pregreet(const Endpoint& client, size_t bytes, Millis after, std::string_view text);
    void hangup(const Endpoint& client, Millis after);
    void dnsbl_rank(const Endpoint& client, int rank);
    void pass_new(const Endpoint& client);
    void pass_old(const Endpoint& client);
    void allowlisted(const Endpoint& client);
    void denylisted(const Endpoint& client);
    void too_many_connections(const Endpoint& client, std::string_view which);
    void message_refused(const Endpoint& client, std::string_view why);
    void backend_unavailable(const Endpoint& client, std::string_view why);
    // The backend greeted this client with a refusal (reply: the whole greeting).
    void backend_refused(const Endpoint& client, std::string_view reply);
    void proxy_header_error(const Endpoint& peer, std::string_view why);
    void disconnect(const Endpoint& client, std::string_view outcome, Millis duration);

    Logger& logger() { return log_; }
    WorkerMetrics& metrics() { return metrics_; }

private:
    Logger& log_;
    WorkerMetrics& metrics_;
};

}  // namespace smtpscreen
