#include "core/resolve.h"

#include <netdb.h>
#include <sys/socket.h>

#include <memory>

namespace smtpscreen {

std::optional<Endpoint> resolve_host(const std::string& host, uint16_t port, std::string& why) {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    // A fuzzer's mutated names would each wait for a DNS server (tests/fuzz/meson.build).
    (void)host;
    (void)port;
    why = "host names are not resolved in a fuzzing build";
    return std::nullopt;
#else
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) {
        why = ::gai_strerror(rc);
        return std::nullopt;
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
        if (auto e = Endpoint::from_sockaddr(a->ai_addr)) {
            e->set_port(port);
            return e;
        }
    }
    why = "it has no IPv4 or IPv6 address";
    return std::nullopt;
#endif
}

}  // namespace smtpscreen
