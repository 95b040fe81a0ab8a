#include <doctest/doctest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "proxy/handoff_header.h"

using namespace smtpscreen;

namespace {

std::string bytes(std::initializer_list<int> list) {
    std::string out;
    for (int b : list) out.push_back(static_cast<char>(b));
    return out;
}

const std::string kSig = bytes({0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a});

Endpoint ep(const char* text) { return *Endpoint::parse(text); }

using Status = ProxyHeader::Status;

void require_need_more_on_every_prefix(const std::string& header, ProxyProtocol mode) {
    for (size_t n = 0; n < header.size(); ++n) {
        INFO("prefix length " << n);
        const auto h = parse_proxy_header(std::string_view(header).substr(0, n), mode);
        CHECK(h.status == Status::NeedMore);
    }
}

}  // namespace

TEST_CASE("encode_proxy_v1 writes the exact TCP4 and TCP6 lines") {
    CHECK(encode_proxy_v1(ep("192.0.2.1:5678"), ep("198.51.100.2:25")) ==
          "PROXY TCP4 192.0.2.1 198.51.100.2 5678 25\r\n");
    CHECK(encode_proxy_v1(ep("[2001:db8::1]:5678"), ep("[2001:db8::25]:25")) ==
          "PROXY TCP6 2001:db8::1 2001:db8::25 5678 25\r\n");
}

TEST_CASE("encode_proxy_v1 maps an IPv4 side to IPv6 when the families differ") {
    CHECK(encode_proxy_v1(ep("[2001:db8::1]:5678"), ep("192.0.2.25:25")) ==
          "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.25 5678 25\r\n");
}

TEST_CASE("encode_proxy_v2 writes the exact TCP4 header") {
    const std::string expected = kSig + bytes({0x21, 0x11, 0x00, 0x0c, 192, 0, 2, 1, 198, 51, 100, 2, 0x16, 0x2e, 0x00,
                                               0x19});
    CHECK(encode_proxy_v2(ep("192.0.2.1:5678"), ep("198.51.100.2:25")) == expected);
}

TEST_CASE("encode_proxy_v2 writes the exact TCP6 header") {
    const std::string expected =
        kSig + bytes({0x21, 0x21, 0x00, 0x24,                                                  //
                      0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,             // src
                      0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25,             // dst
                      0x16, 0x2e, 0x00, 0x19});
    CHECK(encode_proxy_v2(ep("[2001:db8::1]:5678"), ep("[2001:db8::25]:25")) == expected);
}

TEST_CASE("v1 and v2 headers parse back to what was encoded, leaving the SMTP bytes") {
    struct Case {
        const char* client;
        const char* local;
    };
    for (const Case c : {Case{"192.0.2.1:5678", "198.51.100.2:25"}, Case{"[2001:db8::1]:65535", "[2001:db8::25]:25"},
                         Case{"0.0.0.0:0", "255.255.255.255:65535"}}) {
        for (const bool v2 : {false, true}) {
            INFO(c.client << (v2 ? " v2" : " v1"));
            const std::string header =
                v2 ? encode_proxy_v2(ep(c.client), ep(c.local)) : encode_proxy_v1(ep(c.client), ep(c.local));
            for (const auto mode : {v2 ? ProxyProtocol::V2 : ProxyProtocol::V1, ProxyProtocol::Auto}) {
                const auto h = parse_proxy_header(header + "EHLO x\r\n", mode);
                REQUIRE(h.status == Status::Done);
                CHECK(h.consumed == header.size());
                CHECK_FALSE(h.local);
                CHECK(h.source == ep(c.client));
                CHECK(h.destination == ep(c.local));
            }
        }
    }
}

TEST_CASE("every strict prefix of a valid header needs more bytes") {
    require_need_more_on_every_prefix(encode_proxy_v1(ep("192.0.2.1:5678"), ep("198.51.100.2:25")), ProxyProtocol::V1);
    require_need_more_on_every_prefix(encode_proxy_v1(ep("[2001:db8::1]:1"), ep("[2001:db8::2]:2")),
                                      ProxyProtocol::Auto);
    require_need_more_on_every_prefix("PROXY UNKNOWN\r\n", ProxyProtocol::V1);
    require_need_more_on_every_prefix(encode_proxy_v2(ep("192.0.2.1:5678"), ep("198.51.100.2:25")), ProxyProtocol::V2);
    require_need_more_on_every_prefix(encode_proxy_v2(ep("[2001:db8::1]:1"), ep("[2001:db8::2]:2")),
                                      ProxyProtocol::Auto);
}

TEST_CASE("v1 UNKNOWN and v2 LOCAL keep the connection's own addresses") {
    auto h = parse_proxy_header("PROXY UNKNOWN\r\n", ProxyProtocol::V1);
    CHECK(h.status == Status::Done);
    CHECK(h.local);
    CHECK(h.consumed == 15);

    h = parse_proxy_header("PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\nQUIT", ProxyProtocol::Auto);
    CHECK(h.status == Status::Done);
    CHECK(h.local);
    CHECK(h.consumed == 43);

    // LOCAL may carry any (valid) family and a block that is skipped whole.
    const std::string local = kSig + bytes({0x20, 0x00, 0x00, 0x03, 0xaa, 0xbb, 0xcc});
    h = parse_proxy_header(local + "EHLO", ProxyProtocol::V2);
    CHECK(h.status == Status::Done);
    CHECK(h.local);
    CHECK(h.consumed == local.size());
}

TEST_CASE("v2 TLVs after the addresses are skipped, and a CRC32C TLV is verified") {
    // 192.0.2.1:5678 -> 198.51.100.2:25 with a NOOP TLV and a correct CRC32C TLV.
    const std::string with_crc = kSig + bytes({0x21, 0x11, 0x00, 0x18, 0xc0, 0x00, 0x02, 0x01, 0xc6, 0x33,
                                               0x64, 0x02, 0x16, 0x2e, 0x00, 0x19, 0x04, 0x00, 0x02, 0xaa,
                                               0xbb, 0x03, 0x00, 0x04, 0x3d, 0x90, 0xed, 0x56});
    auto h = parse_proxy_header(with_crc + "EHLO", ProxyProtocol::V2);
    REQUIRE(h.status == Status::Done);
    CHECK(h.consumed == with_crc.size());
    CHECK(h.source == ep("192.0.2.1:5678"));

    std::string corrupted = with_crc;
    corrupted.back() ^= 1;
    h = parse_proxy_header(corrupted, ProxyProtocol::V2);
    CHECK(h.status == Status::Invalid);

    // A TLV that claims more bytes than the header has.
    const std::string overrun = kSig + bytes({0x21, 0x11, 0x00, 0x10, 192, 0, 2, 1, 198, 51, 100, 2, 0x16, 0x2e, 0x00,
                                              0x19, 0x04, 0x00, 0x09, 0x00});
    CHECK(parse_proxy_header(overrun, ProxyProtocol::V2).status == Status::Invalid);
}

TEST_CASE("invalid v2 headers are refused as soon as a byte shows it") {
    SUBCASE("a client speaking SMTP to a v2 listener") {
        CHECK(parse_proxy_header("E", ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header("EHLO client.example\r\n", ProxyProtocol::V2).status == Status::Invalid);
    }
    SUBCASE("bad signature in the middle") {
        std::string sig = kSig.substr(0, 8) + "X";
        CHECK(parse_proxy_header(sig, ProxyProtocol::V2).status == Status::Invalid);
    }
    SUBCASE("bad version or command") {
        CHECK(parse_proxy_header(kSig + bytes({0x11}), ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header(kSig + bytes({0x22}), ProxyProtocol::V2).status == Status::Invalid);
    }
    SUBCASE("bad family") {
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x41}), ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x13}), ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header(kSig + bytes({0x20, 0x55}), ProxyProtocol::V2).status == Status::Invalid);
        // Valid families that are not TCP (UDP, UNIX, UNSPEC) are refused for PROXY.
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x12}), ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x31}), ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x00}), ProxyProtocol::V2).status == Status::Invalid);
    }
    SUBCASE("oversized length, before the body arrives") {
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x11, 0xff, 0xff}), ProxyProtocol::V2).status == Status::Invalid);
        const size_t too_long = kProxyHeaderMaxLength - 16 + 1;
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x11, static_cast<int>(too_long >> 8),
                                               static_cast<int>(too_long & 0xff)}),
                                 ProxyProtocol::V2)
                  .status == Status::Invalid);
    }
    SUBCASE("length too short for the family") {
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x11, 0x00, 0x0b}), ProxyProtocol::V2).status == Status::Invalid);
        CHECK(parse_proxy_header(kSig + bytes({0x21, 0x21, 0x00, 0x0c}), ProxyProtocol::V2).status == Status::Invalid);
    }
    SUBCASE("a v1 line on a v2 listener") {
        CHECK(parse_proxy_header("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ProxyProtocol::V2).status == Status::Invalid);
    }
}

TEST_CASE("invalid v1 lines are refused") {
    auto invalid = [](std::string_view s, ProxyProtocol mode = ProxyProtocol::V1) {
        return parse_proxy_header(s, mode).status == Status::Invalid;
    };
    CHECK(invalid("GET / HTTP/1.1\r\n"));
    CHECK(invalid("G"));
    CHECK(invalid("GET / HTTP/1.1\r\n", ProxyProtocol::Auto));
    CHECK(invalid("EHLO x\r\n", ProxyProtocol::Auto));
    CHECK(invalid("\x16\x03\x01", ProxyProtocol::Auto));  // a TLS ClientHello
    CHECK(invalid(kSig, ProxyProtocol::V1));
    CHECK(invalid("PROXY TCP5"));
    CHECK(invalid("PROXY UDP4 "));
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678 25\n"));          // bare LF
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678 25\rX"));         // CR without LF
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678 25"  // no CRLF within 107 octets
                  "                                                                     "));
    CHECK(invalid("PROXY TCP4 192.0.2.1  198.51.100.2 5678 25\r\n"));        // two spaces
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678\r\n"));            // missing port
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678 25 1\r\n"));       // extra field
    CHECK(invalid("PROXY TCP4 192.0.2.01 198.51.100.2 5678 25\r\n"));        // leading zero
    CHECK(invalid("PROXY TCP4 256.0.2.1 198.51.100.2 5678 25\r\n"));
    CHECK(invalid("PROXY TCP4 2001:db8::1 198.51.100.2 5678 25\r\n"));       // wrong family
    CHECK(invalid("PROXY TCP6 192.0.2.1 2001:db8::2 5678 25\r\n"));
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n"));
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 05678 25\r\n"));
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n"));
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678 25 \r\n"));
    CHECK(invalid("PROXY \r\n"));
    CHECK(invalid(std::string("PROXY TCP4 192.0.2.1\0", 21)));
    CHECK(invalid("PROXY TCP4 192.0.2.1 198.51.100.2 5678 25\r\n", ProxyProtocol::Off));
}

TEST_CASE("v1 accepts the longest line the format allows and nothing longer") {
    const std::string longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    REQUIRE(longest.size() == kProxyV1MaxLength);
    CHECK(parse_proxy_header(longest, ProxyProtocol::V1).status == Status::Done);
    const std::string too_long = longest.substr(0, longest.size() - 2) + "5\r\n";
    CHECK(parse_proxy_header(too_long, ProxyProtocol::V1).status == Status::Invalid);

    const std::string tcp6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    const auto h = parse_proxy_header(tcp6, ProxyProtocol::V1);
    REQUIRE(h.status == Status::Done);
    CHECK(h.source.port() == 65535);
}

TEST_CASE("xtext_encode follows RFC 3461") {
    CHECK(xtext_encode("mail.example.com") == "mail.example.com");
    CHECK(xtext_encode("a+b=c") == "a+2Bb+3Dc");
    CHECK(xtext_encode("two words") == "two+20words");
    CHECK(xtext_encode(std::string("\x01\x7f\xff", 3)) == "+01+7F+FF");
    CHECK(xtext_encode("[UNAVAILABLE]") == "[UNAVAILABLE]");
    CHECK(xtext_encode("!~") == "!~");
    CHECK(xtext_encode("") == "");
}

TEST_CASE("encode_xclient for IPv4 and IPv6 clients") {
    XclientAttributes a;
    a.client = ep("1.2.3.4:5678");
    a.name = "[UNAVAILABLE]";
    a.helo = "x";
    a.proto = "ESMTP";
    CHECK(encode_xclient(a) == "XCLIENT ADDR=1.2.3.4 PORT=5678 NAME=[UNAVAILABLE] HELO=x PROTO=ESMTP\r\n");

    a.client = ep("[2001:db8::1]:25");
    a.name = "mail.example.org";
    a.helo = "";
    a.proto = "";
    CHECK(encode_xclient(a) == "XCLIENT ADDR=IPV6:2001:db8::1 PORT=25 NAME=mail.example.org\r\n");

    a.name = "";  // no verified name
    a.helo = "bad helo=+";
    a.proto = "SMTP";
    CHECK(encode_xclient(a) == "XCLIENT ADDR=IPV6:2001:db8::1 PORT=25 NAME=[UNAVAILABLE] HELO=bad+20helo+3D+2B PROTO=SMTP\r\n");
}

TEST_CASE("encode_xclient stays within 512 octets by cutting HELO, never inside +XX") {
    XclientAttributes a;
    a.client = ep("[2001:db8::1]:25");
    a.name = "mail.example.org";
    a.proto = "ESMTP";
    for (const char fill : {'h', ' '}) {
        a.helo = std::string(600, fill);
        const std::string line = encode_xclient(a);
        INFO(line);
        CHECK(line.size() <= 512);
        CHECK(line.size() >= 510 - 2);
        CHECK(line.substr(line.size() - 14) == " PROTO=ESMTP\r\n");
        const size_t helo = line.find(" HELO=");
        REQUIRE(helo != std::string::npos);
        const std::string value = line.substr(helo + 6, line.find(' ', helo + 6) - helo - 6);
        if (fill == ' ') CHECK(value.size() % 3 == 0);
    }
}

TEST_CASE("mutated headers never crash, and the result is always bounded") {
    // Deterministic mutation fuzzing: a cheap stand-in for the fuzz corpus.
    uint32_t seed = 12345;
    auto rnd = [&seed] {
        seed = seed * 1103515245u + 12345u;
        return seed >> 8;
    };
    const std::vector<std::string> seeds = {
        encode_proxy_v1(ep("192.0.2.1:5678"), ep("198.51.100.2:25")),
        encode_proxy_v1(ep("[2001:db8::1]:1"), ep("[2001:db8::2]:2")),
        encode_proxy_v2(ep("192.0.2.1:5678"), ep("198.51.100.2:25")),
        encode_proxy_v2(ep("[2001:db8::1]:1"), ep("[2001:db8::2]:2")),
        "PROXY UNKNOWN\r\n",
    };
    for (int i = 0; i < 20000; ++i) {
        std::string s = seeds[rnd() % seeds.size()];
        const int edits = 1 + static_cast<int>(rnd() % 4);
        for (int e = 0; e < edits; ++e) {
            const size_t pos = rnd() % (s.size() + 1);
            switch (rnd() % 3) {
                case 0:
                    if (pos < s.size()) s[pos] = static_cast<char>(rnd());
                    break;
                case 1: s.insert(pos, 1, static_cast<char>(rnd())); break;
                default:
                    if (pos < s.size()) s.erase(pos, 1);
            }
        }
        if (rnd() % 4 == 0) s += std::string(rnd() % 3000, static_cast<char>(rnd()));
        for (const auto mode : {ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Auto}) {
            const auto h = parse_proxy_header(s, mode);
            if (h.status == Status::Done) {
                CHECK(h.consumed <= s.size());
                CHECK(h.consumed <= kProxyHeaderMaxLength);
                if (!h.local) CHECK(h.source.valid());
            }
            if (s.size() >= kProxyHeaderMaxLength) CHECK(h.status != Status::NeedMore);
        }
    }
}
