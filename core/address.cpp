#include "core/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace smtpscreen {

namespace {

// inet_pton needs a NUL-terminated string; addresses are short, so a stack copy does.
bool copy_to_buffer(std::string_view text, char (&buf)[INET6_ADDRSTRLEN + 1]) {
    if (text.empty() || text.size() >= sizeof buf) return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    return true;
}

std::optional<uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size() || value > 65535) return std::nullopt;
    return static_cast<uint16_t>(value);
}

bool is_v4_mapped(const in6_addr& a) {
    static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(a.s6_addr, prefix, sizeof prefix) == 0;
}

Endpoint endpoint_from_v4(const in_addr& a) {
    sockaddr_in in4{};
    in4.sin_family = AF_INET;
    in4.sin_addr = a;
    return *Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&in4));
}

Endpoint endpoint_from_v6(const in6_addr& a) {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_addr = a;
    return *Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&in6));
}

}  // namespace

std::optional<Endpoint> Endpoint::from_sockaddr(const sockaddr* sa) {
    if (sa == nullptr) return std::nullopt;
    Endpoint e;
    if (sa->sa_family == AF_INET) {
        std::memcpy(&e.addr_, sa, sizeof(sockaddr_in));
        return e;
    }
    if (sa->sa_family != AF_INET6) return std::nullopt;
    sockaddr_in6 in6;
    std::memcpy(&in6, sa, sizeof in6);
    if (!is_v4_mapped(in6.sin6_addr)) {
        std::memcpy(&e.addr_, &in6, sizeof in6);
        return e;
    }
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; logs, cache keys
    // and access rules must see the plain IPv4 form.
    sockaddr_in in4{};
    in4.sin_family = AF_INET;
    in4.sin_port = in6.sin6_port;
    std::memcpy(&in4.sin_addr, in6.sin6_addr.s6_addr + 12, 4);
    std::memcpy(&e.addr_, &in4, sizeof in4);
    return e;
}

std::optional<Endpoint> Endpoint::parse_ip(std::string_view ip, uint16_t port) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (!copy_to_buffer(ip, buf)) return std::nullopt;
    sockaddr_in in4{};
    if (inet_pton(AF_INET, buf, &in4.sin_addr) == 1) {
        in4.sin_family = AF_INET;
        in4.sin_port = htons(port);
        return from_sockaddr(reinterpret_cast<const sockaddr*>(&in4));
    }
    sockaddr_in6 in6{};
    if (inet_pton(AF_INET6, buf, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(port);
        return from_sockaddr(reinterpret_cast<const sockaddr*>(&in6));
    }
    return std::nullopt;
}

std::optional<Endpoint> Endpoint::parse(std::string_view text, std::optional<uint16_t> default_port) {
    std::string_view host;
    std::string_view port_text;
    bool has_port = false;
    if (!text.empty() && text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        host = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return std::nullopt;
            port_text = rest.substr(1);
            has_port = true;
        }
    } else {
        size_t colon = text.find(':');
        if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
            host = text.substr(0, colon);
            port_text = text.substr(colon + 1);
            has_port = true;
        } else {
            // No colon (IPv4) or several (bare IPv6, which cannot carry a port unbracketed).
            host = text;
        }
    }
    uint16_t port = 0;
    if (has_port) {
        auto p = parse_port(port_text);
        if (!p) return std::nullopt;
        port = *p;
    } else if (default_port) {
        port = *default_port;
    } else {
        return std::nullopt;
    }
    return parse_ip(host, port);
}

uint16_t Endpoint::port() const {
    if (addr_.sa.sa_family == AF_INET) return ntohs(addr_.v4.sin_port);
    if (addr_.sa.sa_family == AF_INET6) return ntohs(addr_.v6.sin6_port);
    return 0;
}

void Endpoint::set_port(uint16_t port) {
    if (addr_.sa.sa_family == AF_INET) addr_.v4.sin_port = htons(port);
    if (addr_.sa.sa_family == AF_INET6) addr_.v6.sin6_port = htons(port);
}

std::string Endpoint::ip() const {
    char buf[INET6_ADDRSTRLEN] = "";
    if (addr_.sa.sa_family == AF_INET) {
        // Every log line names the client: glibc's inet_ntop goes through sprintf and was
        // a sixth of the user-space instructions of a whole relayed session.
        std::string out;
        out.reserve(15);
        for (unsigned char octet : raw()) {
            if (!out.empty()) out += '.';
            if (octet >= 100) out += static_cast<char>('0' + octet / 100);
            if (octet >= 10) out += static_cast<char>('0' + octet / 10 % 10);
            out += static_cast<char>('0' + octet % 10);
        }
        return out;
    }
    if (addr_.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &addr_.v6.sin6_addr, buf, sizeof buf);
    }
    return buf;
}

std::string Endpoint::to_string() const {
    return "[" + ip() + "]:" + std::to_string(port());
}

std::string Endpoint::ip_port() const {
    if (is_v6()) return to_string();
    return ip() + ":" + std::to_string(port());
}

socklen_t Endpoint::sa_len() const {
    if (addr_.sa.sa_family == AF_INET) return sizeof(sockaddr_in);
    if (addr_.sa.sa_family == AF_INET6) return sizeof(sockaddr_in6);
    return 0;
}

std::string_view Endpoint::raw() const {
    if (addr_.sa.sa_family == AF_INET) {
        const auto* a = &addr_.v4.sin_addr;
        return {reinterpret_cast<const char*>(a), 4};
    }
    if (addr_.sa.sa_family == AF_INET6) {
        const auto* a = &addr_.v6.sin6_addr;
        return {reinterpret_cast<const char*>(a), 16};
    }
    return {};
}

bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.family() == b.family() && a.port() == b.port() && a.raw() == b.raw();
}

std::optional<Cidr> Cidr::parse(std::string_view text) {
    return parse(text, nullptr);
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* why) {
    auto fail = [&](std::string message) -> std::optional<Cidr> {
        if (why) *why = std::move(message);
        return std::nullopt;
    };
    std::string quoted = "\"" + std::string(text) + "\"";
    std::string_view addr_text = text;
    std::string_view len_text;
    bool has_len = false;
    if (size_t slash = text.find('/'); slash != std::string_view::npos) {
        addr_text = text.substr(0, slash);
        len_text = text.substr(slash + 1);
        has_len = true;
    }
    // Postfix's cidr tables accept an IPv6 network in brackets; so do we.
    if (addr_text.size() >= 2 && addr_text.front() == '[' && addr_text.back() == ']') {
        addr_text = addr_text.substr(1, addr_text.size() - 2);
    }
    char buf[INET6_ADDRSTRLEN + 1];
    in6_addr v6{};
    in_addr v4{};
    bool is_v4 = copy_to_buffer(addr_text, buf) && inet_pton(AF_INET, buf, &v4) == 1;
    bool is_v6 = !is_v4 && copy_to_buffer(addr_text, buf) && inet_pton(AF_INET6, buf, &v6) == 1;
    if (!is_v4 && !is_v6) {
        return fail(quoted + " is not a CIDR network (use 192.0.2.0/24, 2001:db8::/32 or a single address)");
    }
    int max_len = is_v4 ? 32 : 128;
    int len = max_len;
    if (has_len) {
        auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
        if (len_text.empty() || ec != std::errc{} || end != len_text.data() + len_text.size() || len < 0 ||
            len > max_len) {
            return fail(quoted + " has a bad prefix length (use /0 to /" + std::to_string(max_len) + " for " +
                        (is_v4 ? "IPv4" : "IPv6") + ")");
        }
    }
    // Clients arrive with mapped addresses already turned into IPv4 (see Endpoint), so a
    // ::ffff:a.b.c.d/len rule must become the IPv4 rule it means or it would never match.
    if (is_v6 && is_v4_mapped(v6) && len >= 96) {
        std::memcpy(&v4, v6.s6_addr + 12, 4);
        is_v4 = true;
        is_v6 = false;
        len -= 96;
    }
    Cidr c;
    c.prefix_len_ = len;
    c.network_ = is_v4 ? endpoint_from_v4(v4) : endpoint_from_v6(v6);
    // As Postfix does, refuse host bits beyond the prefix: "10.1.2.3/8" is almost always
    // a typo for a narrower network, and silently widening or narrowing it hides that.
    std::string_view bytes = c.network_.raw();
    for (int bit = len; bit < static_cast<int>(bytes.size()) * 8; ++bit) {
        if (static_cast<uint8_t>(bytes[bit / 8]) & (0x80 >> (bit % 8))) {
            std::string masked(bytes);
            for (int b = len; b < static_cast<int>(masked.size()) * 8; ++b) {
                masked[b / 8] = static_cast<char>(static_cast<uint8_t>(masked[b / 8]) & ~(0x80 >> (b % 8)));
            }
            char out[INET6_ADDRSTRLEN] = "";
            inet_ntop(c.network_.family(), masked.data(), out, sizeof out);
            return fail(quoted + " has address bits set beyond the prefix (use " + out + "/" +
                        std::to_string(len) + ")");
        }
    }
    return c;
}

bool Cidr::contains(const Endpoint& addr) const {
    if (!addr.valid() || addr.family() != network_.family()) return false;
    std::string_view a = addr.raw();
    std::string_view n = network_.raw();
    int full = prefix_len_ / 8;
    if (a.substr(0, full) != n.substr(0, full)) return false;
    int rest = prefix_len_ % 8;
    if (rest == 0) return true;
    auto mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (static_cast<uint8_t>(a[full]) & mask) == (static_cast<uint8_t>(n[full]) & mask);
}

std::string Cidr::to_string() const {
    return network_.ip() + "/" + std::to_string(prefix_len_);
}

std::string reverse_name(const Endpoint& addr) { return reverse_name(addr.raw()); }

std::string reverse_name(std::string_view bytes) {
    std::string out;
    if (bytes.size() == 4) {
        for (int i = 3; i >= 0; --i) {
            out += std::to_string(static_cast<uint8_t>(bytes[i]));
            if (i > 0) out += '.';
        }
        return out;
    }
    static constexpr char hex[] = "0123456789abcdef";
    for (int i = static_cast<int>(bytes.size()) - 1; i >= 0; --i) {
        auto b = static_cast<uint8_t>(bytes[i]);
        out += hex[b & 0x0f];
        out += '.';
        out += hex[b >> 4];
        if (i > 0) out += '.';
    }
    return out;
}

}  // namespace smtpscreen
