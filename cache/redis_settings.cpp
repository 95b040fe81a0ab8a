#include "cache/redis_settings.h"

#include "core/address.h"

namespace smtpscreen {

// cache.redis was checked when the configuration was loaded; an address that does not
// parse (a RedisSettings made by hand) gets a connection refused, not a crash.
std::string RedisSettings::host() const {
    const std::string& to = connect_to.empty() ? address : connect_to;
    auto e = Endpoint::parse(to);
    return e ? e->ip() : to;
}

int RedisSettings::port() const {
    auto e = Endpoint::parse(connect_to.empty() ? address : connect_to);
    return e ? e->port() : 0;
}

}  // namespace smtpscreen
