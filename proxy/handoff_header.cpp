#include "proxy/handoff_header.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <vector>

namespace smtpscreen {
namespace {

// proxy-protocol.txt §2.2: the v2 signature, chosen so that no text protocol can start
// with it (it contains a NUL and "\r\n\r\n").
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr size_t kV2FixedLength = 16;  // signature, ver_cmd, fam, len
constexpr uint8_t kV2CmdLocal = 0x20;
constexpr uint8_t kV2CmdProxy = 0x21;
constexpr uint8_t kV2FamUnspec = 0x00;
constexpr uint8_t kV2FamTcp4 = 0x11;
constexpr uint8_t kV2FamTcp6 = 0x21;
constexpr size_t kV2Tcp4Length = 12;  // 2 * 4 address bytes + 2 * 2 port bytes
constexpr size_t kV2Tcp6Length = 36;  // 2 * 16 + 2 * 2
constexpr uint8_t kTlvCrc32c = 0x03;  // §2.2.3
constexpr size_t kTlvHeaderLength = 3;

constexpr std::string_view kV1Prefix = "PROXY ";

ProxyHeader need_more() { return {}; }

ProxyHeader invalid(std::string why) {
    ProxyHeader h;
    h.status = ProxyHeader::Status::Invalid;
    h.error = std::move(why);
    return h;
}

uint8_t byte_at(std::string_view s, size_t i) { return static_cast<uint8_t>(s[i]); }
uint16_t be16_at(std::string_view s, size_t i) { return static_cast<uint16_t>(byte_at(s, i) << 8 | byte_at(s, i + 1)); }

void put_be16(std::string& out, uint16_t v) {
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v & 0xff));
}

// An IPv4 address in a header whose other address is IPv6 is sent as ::ffff:a.b.c.d
// (RFC 4291 §2.5.5.2) so both addresses share one family, as the formats require.
std::array<uint8_t, 16> as_v6_bytes(const Endpoint& e) {
    std::array<uint8_t, 16> out{};
    const std::string_view raw = e.raw();
    if (raw.size() == 16) {
        std::memcpy(out.data(), raw.data(), 16);
    } else {
        out[10] = 0xff;
        out[11] = 0xff;
        std::memcpy(out.data() + 12, raw.data(), raw.size());
    }
    return out;
}

std::string v6_text(const std::array<uint8_t, 16>& bytes) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
    return buf;
}

std::optional<Endpoint> endpoint_from_bytes(int family, const void* addr, uint16_t port) {
    sockaddr_storage ss{};
    if (family == AF_INET) {
        auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
        sin->sin_family = AF_INET;
        std::memcpy(&sin->sin_addr, addr, 4);
        sin->sin_port = htons(port);
    } else {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
        sin6->sin6_family = AF_INET6;
        std::memcpy(&sin6->sin6_addr, addr, 16);
        sin6->sin6_port = htons(port);
    }
    return Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
}

// CRC32C (Castagnoli, RFC 4960 appendix B), bitwise: it runs once per PROXY header
// that carries the optional checksum TLV, so a table is not worth its 1 KiB.
uint32_t crc32c(std::string_view data) {
    uint32_t crc = 0xffffffffu;
    for (unsigned char c : data) {
        crc ^= c;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

// ---- v2 ----------------------------------------------------------------------------

// TLVs are skipped, but they must tile the rest of the block exactly; a header whose
// TLVs overrun it is malformed (haproxy rejects it too). §2.2.3: a receiver that
// understands the CRC32C TLV MUST verify it, and this one does.
std::optional<std::string> check_tlvs(std::string_view header, size_t offset) {
    std::optional<size_t> crc_at;
    while (offset < header.size()) {
        if (header.size() - offset < kTlvHeaderLength) return "truncated TLV";
        const uint8_t type = byte_at(header, offset);
        const size_t len = be16_at(header, offset + 1);
        if (header.size() - offset - kTlvHeaderLength < len) return "TLV longer than the header";
        if (type == kTlvCrc32c) {
            if (len != 4) return "CRC32C TLV of the wrong length";
            crc_at = offset + kTlvHeaderLength;
        }
        offset += kTlvHeaderLength + len;
    }
    if (crc_at) {
        const uint32_t sent = static_cast<uint32_t>(be16_at(header, *crc_at)) << 16 | be16_at(header, *crc_at + 2);
        std::string copy(header);
        std::memset(copy.data() + *crc_at, 0, 4);
        if (crc32c(copy) != sent) return "CRC32C checksum mismatch";
    }
    return std::nullopt;
}

ProxyHeader parse_v2(std::string_view in) {
    // Reject at the first byte that cannot belong to a valid header, so that a client
    // speaking SMTP to a v2 listener is closed at once rather than at the timeout.
    const size_t sig_seen = std::min(in.size(), kV2Signature.size());
    if (in.substr(0, sig_seen) != kV2Signature.substr(0, sig_seen)) return invalid("not a PROXY v2 signature");
    if (in.size() < 13) return need_more();

    const uint8_t ver_cmd = byte_at(in, 12);
    if ((ver_cmd & 0xf0) != 0x20) return invalid("PROXY v2 header with an unsupported version");
    if (ver_cmd != kV2CmdLocal && ver_cmd != kV2CmdProxy) return invalid("PROXY v2 header with an unknown command");
    const bool local = ver_cmd == kV2CmdLocal;
    if (in.size() < 14) return need_more();

    const uint8_t fam = byte_at(in, 13);
    if ((fam >> 4) > 3 || (fam & 0x0f) > 2) return invalid("PROXY v2 header with an invalid address family");
    // §2.2 lets a receiver refuse UNSPEC for a PROXY command and fall back to UNSPEC for
    // families it does not support (UDP, UNIX). Falling back would make the load
    // balancer itself the client, and it is typically allow-listed: refuse instead.
    if (!local && fam != kV2FamTcp4 && fam != kV2FamTcp6) {
        return invalid("PROXY v2 header for a connection that is not TCP over IPv4 or IPv6");
    }
    if (in.size() < kV2FixedLength) return need_more();

    const size_t len = be16_at(in, 14);
    if (kV2FixedLength + len > kProxyHeaderMaxLength) return invalid("PROXY v2 header longer than we accept");
    const size_t addr_len = local ? 0 : (fam == kV2FamTcp4 ? kV2Tcp4Length : kV2Tcp6Length);
    if (len < addr_len) return invalid("PROXY v2 address block too short for its family");
    if (in.size() < kV2FixedLength + len) return need_more();

    ProxyHeader h;
    h.status = ProxyHeader::Status::Done;
    h.consumed = kV2FixedLength + len;
    h.local = local;
    // §2.2: with LOCAL the receiver "must use the real connection endpoints and
    // discard the protocol block including the family", TLVs included.
    if (local) return h;

    const std::string_view header = in.substr(0, h.consumed);
    const char* a = header.data() + kV2FixedLength;
    const bool v4 = fam == kV2FamTcp4;
    const size_t ip_len = v4 ? 4 : 16;
    const uint16_t sport = be16_at(header, kV2FixedLength + 2 * ip_len);
    const uint16_t dport = be16_at(header, kV2FixedLength + 2 * ip_len + 2);
    auto src = endpoint_from_bytes(v4 ? AF_INET : AF_INET6, a, sport);
    auto dst = endpoint_from_bytes(v4 ? AF_INET : AF_INET6, a + ip_len, dport);
    if (!src || !dst) return invalid("PROXY v2 header with unusable addresses");
    if (auto bad = check_tlvs(header, kV2FixedLength + addr_len)) return invalid("PROXY v2 header: " + *bad);
    h.source = *src;
    h.destination = *dst;
    return h;
}

// ---- v1 ----------------------------------------------------------------------------

std::vector<std::string_view> split_spaces(std::string_view line) {
    std::vector<std::string_view> out;
    size_t start = 0;
    while (true) {
        const size_t sp = line.find(' ', start);
        out.push_back(line.substr(start, sp - start));
        if (sp == std::string_view::npos) return out;
        start = sp + 1;
    }
}

// §2.1: decimal 0..65535, no leading zeroes ("to avoid any confusion with octal").
std::optional<uint16_t> parse_v1_port(std::string_view s) {
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
    uint32_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
}

// inet_pton is as strict as §2.1 asks: it refuses IPv4 octets with leading zeroes and
// anything but a single address of the named family.
std::optional<Endpoint> parse_v1_address(std::string_view text, int family, uint16_t port) {
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    const std::string z(text);
    unsigned char bytes[16];
    if (inet_pton(family, z.c_str(), bytes) != 1) return std::nullopt;
    return endpoint_from_bytes(family, bytes, port);
}

// Whether the protocol word seen so far can still become one the format allows.
bool v1_protocol_possible(std::string_view after_prefix) {
    const size_t end = after_prefix.find_first_of(" \r");
    const std::string_view word = after_prefix.substr(0, end);
    for (std::string_view p : {"TCP4", "TCP6", "UNKNOWN"}) {
        if (end == std::string_view::npos ? p.substr(0, word.size()) == word : p == word) return true;
    }
    return false;
}

ProxyHeader parse_v1_line(std::string_view line, size_t consumed) {
    const auto fields = split_spaces(line);
    ProxyHeader h;
    h.consumed = consumed;
    // §2.1: with UNKNOWN "the receiver must ignore anything presented before the CRLF".
    if (fields.size() >= 2 && fields[1] == "UNKNOWN") {
        h.status = ProxyHeader::Status::Done;
        h.local = true;
        return h;
    }
    if (fields.size() < 2 || (fields[1] != "TCP4" && fields[1] != "TCP6")) {
        return invalid("PROXY v1 line with an unknown protocol (TCP4, TCP6 or UNKNOWN)");
    }
    if (fields.size() != 6) return invalid("PROXY v1 line without exactly two addresses and two ports");
    const int family = fields[1] == "TCP4" ? AF_INET : AF_INET6;
    const auto sport = parse_v1_port(fields[4]);
    const auto dport = parse_v1_port(fields[5]);
    if (!sport || !dport) return invalid("PROXY v1 line with a bad port");
    const auto src = parse_v1_address(fields[2], family, *sport);
    const auto dst = parse_v1_address(fields[3], family, *dport);
    if (!src || !dst) return invalid("PROXY v1 line with an address that does not match " + std::string(fields[1]));
    h.status = ProxyHeader::Status::Done;
    h.source = *src;
    h.destination = *dst;
    return h;
}

ProxyHeader parse_v1(std::string_view in) {
    const size_t prefix_seen = std::min(in.size(), kV1Prefix.size());
    if (in.substr(0, prefix_seen) != kV1Prefix.substr(0, prefix_seen)) return invalid("not a PROXY v1 line");

    const size_t window = std::min(in.size(), kProxyV1MaxLength);
    for (size_t i = 0; i < window; ++i) {
        const char c = in[i];
        if (c == '\r') {
            // 107 octets include the CRLF; a CR as the 107th octet leaves no room for LF.
            if (i + 2 > kProxyV1MaxLength) return invalid("PROXY v1 line longer than 107 octets");
            if (i + 1 == in.size()) break;  // the LF may be on its way
            if (in[i + 1] != '\n') return invalid("PROXY v1 line with a CR not followed by LF");
            if (i < kV1Prefix.size()) return invalid("PROXY v1 line ends too early");
            return parse_v1_line(in.substr(0, i), i + 2);
        }
        // §2.1: "The receiver must not tolerate a single CR or LF character to end the line".
        if (c == '\n') return invalid("PROXY v1 line ending in a bare LF");
        if (c < 0x20 || c > 0x7e) return invalid("PROXY v1 line with a non-printable byte");
    }
    if (in.size() > kV1Prefix.size() && !v1_protocol_possible(in.substr(kV1Prefix.size()))) {
        return invalid("PROXY v1 line with an unknown protocol (TCP4, TCP6 or UNKNOWN)");
    }
    if (in.size() >= kProxyV1MaxLength) return invalid("PROXY v1 line longer than 107 octets");
    return need_more();
}

}  // namespace

std::string encode_proxy_v1(const Endpoint& client, const Endpoint& local) {
    if (!client.valid() || !local.valid()) return "PROXY UNKNOWN\r\n";
    std::string src, dst;
    const char* proto = "TCP4";
    if (!client.is_v6() && !local.is_v6()) {
        src = client.ip();
        dst = local.ip();
    } else {
        proto = "TCP6";
        src = v6_text(as_v6_bytes(client));
        dst = v6_text(as_v6_bytes(local));
    }
    return std::string("PROXY ") + proto + " " + src + " " + dst + " " + std::to_string(client.port()) + " " +
           std::to_string(local.port()) + "\r\n";
}

std::string encode_proxy_v2(const Endpoint& client, const Endpoint& local) {
    std::string out(kV2Signature);
    out.push_back(static_cast<char>(kV2CmdProxy));
    if (!client.valid() || !local.valid()) {
        // §2.2: UNSPEC "when dealing with unsupported protocol families"; the receiver
        // then keeps the connection's own addresses (or refuses, as we would).
        out.push_back(static_cast<char>(kV2FamUnspec));
        put_be16(out, 0);
        return out;
    }
    if (!client.is_v6() && !local.is_v6()) {
        out.push_back(static_cast<char>(kV2FamTcp4));
        put_be16(out, kV2Tcp4Length);
        out.append(client.raw());
        out.append(local.raw());
    } else {
        out.push_back(static_cast<char>(kV2FamTcp6));
        put_be16(out, kV2Tcp6Length);
        const auto c = as_v6_bytes(client);
        const auto l = as_v6_bytes(local);
        out.append(reinterpret_cast<const char*>(c.data()), c.size());
        out.append(reinterpret_cast<const char*>(l.data()), l.size());
    }
    put_be16(out, client.port());
    put_be16(out, local.port());
    return out;
}

ProxyHeader parse_proxy_header(std::string_view buffered, ProxyProtocol mode) {
    if (mode == ProxyProtocol::Off) return invalid("PROXY protocol is off for this listener");
    if (buffered.empty()) return need_more();
    switch (mode) {
        case ProxyProtocol::V1: return parse_v1(buffered);
        case ProxyProtocol::V2: return parse_v2(buffered);
        default: break;
    }
    // Auto only tells the versions apart by their first byte ('P' versus CR); it never
    // makes the header optional (proxy-protocol.txt: the receiver "MUST not try to
    // guess whether the protocol header is present or not").
    if (buffered[0] == kV2Signature[0]) return parse_v2(buffered);
    if (buffered[0] == kV1Prefix[0]) return parse_v1(buffered);
    return invalid("neither a PROXY v1 nor a v2 header");
}

std::string xtext_encode(std::string_view text) {
    // RFC 3461 §4: xchar is "!" to "~" except "+" and "="; everything else is "+" and
    // two upper-case hex digits.
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    for (unsigned char c : text) {
        if (c >= 33 && c <= 126 && c != '+' && c != '=') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('+');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 0x0f]);
        }
    }
    return out;
}

std::string encode_xclient(const XclientAttributes& attrs) {
    // RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF. Postfix
    // accepts longer XCLIENT lines (up to line_length_limit), Exim and others may not,
    // so we stay within 512 and give up HELO text first: only HELO is client-chosen.
    constexpr size_t kMaxLine = 512;
    const std::string addr = (attrs.client.is_v6() ? "IPV6:" : "") + attrs.client.ip();
    std::string name = attrs.name.empty() ? "[UNAVAILABLE]" : xtext_encode(attrs.name);

    auto build_without_helo = [&] {
        std::string line = "XCLIENT ADDR=" + xtext_encode(addr) + " PORT=" + std::to_string(attrs.client.port()) +
                           " NAME=" + name;
        return line;
    };
    std::string line = build_without_helo();
    std::string tail = attrs.proto.empty() ? std::string() : " PROTO=" + xtext_encode(attrs.proto);
    // A verified DNS name is at most 253 octets of letters, digits, '-' and '.', so this
    // only triggers for a name that is not a host name at all: it is then no better
    // than no name.
    if (line.size() + tail.size() + 2 > kMaxLine) {
        name = "[UNAVAILABLE]";
        line = build_without_helo();
    }
    if (!attrs.helo.empty()) {
        const size_t budget = kMaxLine - std::min(kMaxLine, line.size() + tail.size() + 2);
        const std::string key = " HELO=";
        if (budget > key.size()) {
            std::string helo;
            for (char c : attrs.helo) {
                std::string enc = xtext_encode(std::string_view(&c, 1));
                if (key.size() + helo.size() + enc.size() > budget) break;  // never split a +XX
                helo += enc;
            }
            if (!helo.empty()) line += key + helo;
        }
    }
    return line + tail + "\r\n";
}

}  // namespace smtpscreen
