#pragma once
// A host name to an address, with the system's resolver (getaddrinfo(3): /etc/hosts,
// then DNS, as nsswitch.conf says). It blocks, so it is for loading the configuration
// only (start, --check, SIGHUP), never for a session's path on an event loop.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/address.h"

namespace smtpscreen {

// The first address getaddrinfo(3) gives for `host` (in its preferred order, RFC 6724),
// with `port`. nullopt when the name does not resolve, with `why` saying so in words
// (gai_strerror's).
std::optional<Endpoint> resolve_host(const std::string& host, uint16_t port, std::string& why);

}  // namespace smtpscreen
