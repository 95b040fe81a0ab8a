#pragma once
// Client and server addresses as small value types with no I/O in them.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace smtpscreen {

// An IPv4 or IPv6 address with a port. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)
// are stored as plain IPv4 so that logs, cache keys and CIDR matches see one form.
class Endpoint {
public:
    Endpoint() = default;
    static std::optional<Endpoint> from_sockaddr(const sockaddr* sa);
    // "1.2.3.4" or "::1" (no brackets), with the given port.
    static std::optional<Endpoint> parse_ip(std::string_view ip, uint16_t port = 0);
    // "1.2.3.4:25", "[::1]:25"; with default_port, a bare IP ("1.2.3.4", "[::1]", "::1") is allowed too.
    static std::optional<Endpoint> parse(std::string_view text, std::optional<uint16_t> default_port = std::nullopt);

    bool is_v6() const { return addr_.sa.sa_family == AF_INET6; }
    bool valid() const { return addr_.sa.sa_family == AF_INET || addr_.sa.sa_family == AF_INET6; }
    int family() const { return addr_.sa.sa_family; }
    uint16_t port() const;
    void set_port(uint16_t port);
    std::string ip() const;          // "1.2.3.4" / "2001:db8::1"
    std::string to_string() const;   // "[1.2.3.4]:25" / "[2001:db8::1]:25", postscreen's log form
    std::string ip_port() const;     // "1.2.3.4:25" / "[2001:db8::1]:25", the config form
    const sockaddr* sa() const { return &addr_.sa; }
    socklen_t sa_len() const;
    // Raw address bytes in network order: 4 or 16 of them.
    std::string_view raw() const;

    friend bool operator==(const Endpoint& a, const Endpoint& b);

private:
    // Either family in 28 bytes, where sockaddr_storage takes 128: every session holds two
    // endpoints, and an idle client's whole footprint is about 1 KiB. v6 comes first so
    // that {} zeroes all of it.
    union {
        sockaddr_in6 v6;
        sockaddr_in v4;
        sockaddr sa;
    } addr_{};
};

// "10.0.0.0/8", "2001:db8::/32", or a single address (full length).
class Cidr {
public:
    static std::optional<Cidr> parse(std::string_view text);
    // As above; on failure sets *why to "what is wrong (what to use instead)".
    // Host bits beyond the prefix ("10.1.2.3/8") are refused, as Postfix does;
    // "::ffff:a.b.c.d/len" with len >= 96 becomes the IPv4 network it means.
    static std::optional<Cidr> parse(std::string_view text, std::string* why);
    bool contains(const Endpoint& addr) const;
    std::string to_string() const;  // always "network/len"
    const Endpoint& network() const { return network_; }
    int prefix_len() const { return prefix_len_; }
    friend bool operator==(const Cidr& a, const Cidr& b) = default;

private:
    Endpoint network_;
    int prefix_len_ = 0;
};

// Reverse-order name for DNSBL queries: 1.2.3.4 -> "4.3.2.1", 2001:db8::1 -> nibbles.
std::string reverse_name(const Endpoint& addr);
// The same from the raw address bytes (Endpoint::raw): 4 or 16 of them.
std::string reverse_name(std::string_view raw_address);

}  // namespace smtpscreen
