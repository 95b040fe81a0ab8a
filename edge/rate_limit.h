#pragma once
// The values of limits.per_client_rate, limits.per_network_rate and
// limits.network_prefix, and the key a client or its network is counted under
// (docs/design.md, "Edge defences"). Plain values, no I/O.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/duration.h"

namespace smtpscreen {

// "N/PERIOD": at most N new connections within PERIOD; N = 0 is off.
struct RateLimit {
    uint32_t count = 0;
    Millis period{0};

    bool on() const { return count > 0; }
    friend bool operator==(const RateLimit&, const RateLimit&) = default;
};

// "30/1m" (any duration after the slash), or "0" for off. On failure sets *why to what
// is wrong and what to write instead; `events` names what is counted in it
// ("connections", "failures").
std::optional<RateLimit> parse_rate_limit(std::string_view text, std::string* why,
                                          std::string_view events = "connections");
// The form parse_rate_limit reads back: "30/1m", "0".
std::string format_rate_limit(const RateLimit& limit);

// The prefix lengths that make a network of IPv4 and of IPv6 addresses: an IPv6 client
// usually owns a whole /64, so counting its addresses one by one counts nothing.
struct NetworkPrefix {
    int v4 = 24;
    int v6 = 64;
    friend bool operator==(const NetworkPrefix&, const NetworkPrefix&) = default;
};

// The rate limits of one configuration (limits.rate_table_size: the table's size).
struct RateRules {
    RateLimit per_client;
    RateLimit per_network;
    NetworkPrefix network_prefix;
    size_t table_size = 100000;

    bool on() const { return per_client.on() || per_network.on(); }
};

enum class RateScope : uint8_t { Client, Network };
inline constexpr std::array<std::string_view, 2> kRateScopeNames{"client", "network"};

// One client address, or the network of a prefix length around one: what a count is
// kept under. The scope is part of the key, so that a client and a network of full
// length (network_prefix 32) keep counts of their own against their own limits.
struct RateKey {
    std::array<uint8_t, 16> bytes{};  // the address, masked to `prefix`; IPv4 in the first 4
    uint8_t v6 = 0;
    uint8_t prefix = 0;
    RateScope scope = RateScope::Client;

    static RateKey client(const Endpoint& address);
    static RateKey network(const Endpoint& address, const NetworkPrefix& prefix);
    // "192.0.2.7", "192.0.2.0/24", "2001:db8::/64".
    std::string to_string() const;
    friend bool operator==(const RateKey&, const RateKey&) = default;
};

}  // namespace smtpscreen
