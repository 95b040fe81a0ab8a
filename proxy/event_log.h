#pragma once
// Every log line (docs/design.md, "Log lines"), one function per event, so postscreen's
// wording (which pflogsumm and fail2ban's postfix filter parse) lives in one place.
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/duration.h"
#include "core/log.h"

namespace smtpscreen {

// "0.06" seconds, as postscreen prints elapsed times.
std::string format_elapsed(Millis elapsed);

class EventLog {
public:
    explicit EventLog(Logger& log) : log_(log) {}

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

private:
    Logger& log_;
};

}  // namespace smtpscreen
