#pragma once
// How smtpscreen reaches the Redis server of cache.backend = redis (smtpscreen.ini(5),
// the cache.redis* keys), as plain data: the cache module does not read a Config.
#include <cstddef>
#include <string>

#include "core/duration.h"

namespace smtpscreen {

struct RedisSettings {
    // "ip:port" or "[v6]:port" as the key table writes it, "host:port" as written, or
    // a unix socket path (starting with '/'): what the logs name.
    std::string address = "127.0.0.1:6379";
    // Where to connect: the IP address a host name in `address` was resolved to when the
    // configuration was loaded (never on an event loop); empty: `address` itself.
    std::string connect_to;
    Millis timeout{200};       // the longest a session waits for a reply
    std::string password;      // AUTH on every connection when set
    int db = 0;                // SELECT on every connection when not 0
    std::string prefix = "smtpscreen:";

    // Commands sent and not yet answered, per connection. Beyond it a lookup is a miss
    // and a store is dropped: a Redis that falls behind never makes memory grow.
    size_t max_in_flight = 4096;
    // Reconnecting after an outage: the first retry after first_retry, each further one
    // twice as late, at most max_retry apart.
    Millis first_retry{100};
    Millis max_retry{10000};

    bool unix_socket() const { return !address.empty() && address.front() == '/'; }
    // For TCP: the IP address (without brackets) and the port to connect to.
    std::string host() const;
    int port() const;

    friend bool operator==(const RedisSettings&, const RedisSettings&) = default;
};

}  // namespace smtpscreen
