#include "cache/redis_settings.h"

#include "core/address.h"

namespace smtpscreen {

// cache.redis was checked when the configuration was loaded; an address that does not
// parse (a RedisSettings made by hand) gets a connection refused, not a crash.
std::string RedisSettings::host() const {
    auto e = Endpoint::parse(address);
    return e ? e->ip() : address;
}

int RedisSettings::port() const {
    auto e = Endpoint::parse(address);
    return e ? e->port() : 0;
}

}  // namespace smtpscreen
