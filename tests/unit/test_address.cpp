#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <cstring>

#include "core/address.h"

using namespace smtpscreen;

namespace {

Endpoint ip(const char* text) {
    auto e = Endpoint::parse_ip(text);
    REQUIRE(e.has_value());
    return *e;
}

Cidr cidr(const char* text) {
    auto c = Cidr::parse(text);
    REQUIRE(c.has_value());
    return *c;
}

}  // namespace

TEST_CASE("parse_ip reads IPv4 and IPv6 and formats them back") {
    auto v4 = ip("192.0.2.1");
    CHECK_FALSE(v4.is_v6());
    CHECK(v4.family() == AF_INET);
    CHECK(v4.ip() == "192.0.2.1");
    CHECK(v4.raw().size() == 4);

    auto v6 = ip("2001:DB8:0:0::1");
    CHECK(v6.is_v6());
    CHECK(v6.ip() == "2001:db8::1");  // canonical (RFC 5952) form
    CHECK(v6.raw().size() == 16);
}

TEST_CASE("IPv4 addresses are written as inet_ntop writes them") {
    // Every octet value in every position, with neighbours of each width.
    for (unsigned v = 0; v < 256; ++v) {
        for (unsigned pos = 0; pos < 4; ++pos) {
            in_addr a{};
            unsigned char bytes[4] = {9, 99, 199, 0};
            bytes[pos] = static_cast<unsigned char>(v);
            std::memcpy(&a, bytes, 4);
            char want[INET_ADDRSTRLEN];
            REQUIRE(inet_ntop(AF_INET, &a, want, sizeof want) != nullptr);
            CHECK(ip(want).ip() == want);
        }
    }
}

TEST_CASE("parse_ip turns an IPv4-mapped IPv6 address into plain IPv4") {
    auto e = ip("::ffff:198.51.100.7");
    CHECK_FALSE(e.is_v6());
    CHECK(e.ip() == "198.51.100.7");
    CHECK(e == ip("198.51.100.7"));
}

TEST_CASE("from_sockaddr normalises a mapped address and keeps the port") {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(4711);
    REQUIRE(inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6.sin6_addr) == 1);
    auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&in6));
    REQUIRE(e);
    CHECK(e->family() == AF_INET);
    CHECK(e->port() == 4711);
    CHECK(e->to_string() == "[10.1.2.3]:4711");
    CHECK(e->sa_len() == sizeof(sockaddr_in));

    sockaddr other{};
    other.sa_family = AF_UNIX;
    CHECK_FALSE(Endpoint::from_sockaddr(&other));
    CHECK_FALSE(Endpoint::from_sockaddr(nullptr));
}

TEST_CASE("parse_ip refuses what is not exactly an address") {
    for (const char* bad : {"", "1.2.3", "1.2.3.256", "1.2.3.4 ", " 1.2.3.4", "::g", "[::1]", "1.2.3.4:25",
                            "localhost", "2001:db8::1%eth0"}) {
        std::string shown = bad;
        CAPTURE(shown);
        CHECK_FALSE(Endpoint::parse_ip(bad));
    }
}

TEST_CASE("parse reads ip:port and [v6]:port") {
    auto a = Endpoint::parse("192.0.2.1:25");
    REQUIRE(a);
    CHECK(a->port() == 25);
    CHECK(a->to_string() == "[192.0.2.1]:25");
    CHECK(a->ip_port() == "192.0.2.1:25");

    auto b = Endpoint::parse("[2001:db8::25]:2525");
    REQUIRE(b);
    CHECK(b->is_v6());
    CHECK(b->port() == 2525);
    CHECK(b->to_string() == "[2001:db8::25]:2525");
    CHECK(b->ip_port() == "[2001:db8::25]:2525");

    auto c = Endpoint::parse("[192.0.2.1]:65535");  // postscreen's log form reads back too
    REQUIRE(c);
    CHECK(c->port() == 65535);

    auto mapped = Endpoint::parse("[::ffff:192.0.2.9]:25");
    REQUIRE(mapped);
    CHECK(mapped->ip_port() == "192.0.2.9:25");
}

TEST_CASE("parse: an unbracketed IPv6 address never carries a port") {
    auto e = Endpoint::parse("2001:db8::1:25", 53);
    REQUIRE(e);
    CHECK(e->ip() == "2001:db8::1:25");
    CHECK(e->port() == 53);
}

TEST_CASE("parse takes a bare address only when a default port is given") {
    CHECK_FALSE(Endpoint::parse("192.0.2.1"));
    CHECK_FALSE(Endpoint::parse("::1"));
    CHECK_FALSE(Endpoint::parse("[::1]"));
    auto a = Endpoint::parse("192.0.2.1", 53);
    REQUIRE(a);
    CHECK(a->port() == 53);
    auto b = Endpoint::parse("::1", 53);
    REQUIRE(b);
    CHECK(b->ip_port() == "[::1]:53");
    auto c = Endpoint::parse("[::1]", 53);
    REQUIRE(c);
    CHECK(c->port() == 53);
    auto d = Endpoint::parse("192.0.2.1:5353", 53);
    REQUIRE(d);
    CHECK(d->port() == 5353);
}

TEST_CASE("parse refuses bad ports and bad brackets") {
    for (const char* bad : {"1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:2x", "1.2.3.4:+25", "[::1]x",
                            "[::1", "[::1]:", ":25", "[]:25", "1.2.3.4:25:26", "1.2.3.4:0000025"}) {
        std::string shown = bad;
        CAPTURE(shown);
        CHECK_FALSE(Endpoint::parse(bad, 25));
    }
}

TEST_CASE("set_port and equality: the port is part of an endpoint") {
    auto a = *Endpoint::parse("192.0.2.1:25");
    auto b = *Endpoint::parse("192.0.2.1:26");
    CHECK_FALSE(a == b);
    b.set_port(25);
    CHECK(a == b);
    CHECK_FALSE(ip("::1") == ip("127.0.0.1"));
    CHECK_FALSE(Endpoint().valid());
    CHECK(Endpoint().port() == 0);
}

TEST_CASE("Cidr contains the edges of an IPv4 network and nothing beyond") {
    auto net = cidr("172.16.0.0/12");
    CHECK(net.contains(ip("172.16.0.0")));
    CHECK(net.contains(ip("172.31.255.255")));
    CHECK_FALSE(net.contains(ip("172.32.0.0")));
    CHECK_FALSE(net.contains(ip("172.15.255.255")));
    CHECK(net.to_string() == "172.16.0.0/12");
    CHECK(net.contains(ip("::ffff:172.20.1.1")));  // mapped clients match IPv4 rules
}

TEST_CASE("Cidr /0, /32 and a bare address") {
    auto all = cidr("0.0.0.0/0");
    CHECK(all.contains(ip("0.0.0.0")));
    CHECK(all.contains(ip("255.255.255.255")));
    CHECK_FALSE(all.contains(ip("::1")));  // /0 of one family never matches the other

    auto host = cidr("192.0.2.7/32");
    CHECK(host.contains(ip("192.0.2.7")));
    CHECK_FALSE(host.contains(ip("192.0.2.6")));
    CHECK_FALSE(host.contains(ip("192.0.2.8")));

    auto bare = cidr("192.0.2.7");
    CHECK(bare.prefix_len() == 32);
    CHECK(bare == host);
    CHECK(bare.to_string() == "192.0.2.7/32");
}

TEST_CASE("Cidr for IPv6: /0, /32, /128, brackets") {
    auto all = cidr("::/0");
    CHECK(all.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    CHECK_FALSE(all.contains(ip("10.0.0.1")));

    auto doc = cidr("2001:db8::/32");
    CHECK(doc.contains(ip("2001:db8::")));
    CHECK(doc.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
    CHECK_FALSE(doc.contains(ip("2001:db9::")));
    CHECK_FALSE(doc.contains(ip("2001:db7:ffff::1")));

    auto odd = cidr("2001:db8:8000::/33");
    CHECK(odd.contains(ip("2001:db8:ffff::1")));
    CHECK_FALSE(odd.contains(ip("2001:db8:7fff::1")));

    auto one = cidr("2001:db8::1/128");
    CHECK(one.contains(ip("2001:db8::1")));
    CHECK_FALSE(one.contains(ip("2001:db8::2")));
    CHECK(cidr("::1") == cidr("::1/128"));

    CHECK(cidr("[2001:db8::]/32") == doc);
    CHECK(doc.to_string() == "2001:db8::/32");
}

TEST_CASE("Cidr for a mapped IPv6 network becomes the IPv4 network") {
    auto c = cidr("::ffff:10.0.0.0/104");
    CHECK(c.to_string() == "10.0.0.0/8");
    CHECK(c.contains(ip("10.9.9.9")));
}

TEST_CASE("Cidr refuses bad prefix lengths, with a reason") {
    std::string why;
    for (const char* bad : {"10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/8/8"}) {
        std::string shown = bad;
        CAPTURE(shown);
        CHECK_FALSE(Cidr::parse(bad, &why));
        CHECK(why.find("0 to /32 for IPv4") != std::string::npos);
    }
    CHECK_FALSE(Cidr::parse("2001:db8::/129", &why));
    CHECK(why.find("/0 to /128 for IPv6") != std::string::npos);
    CHECK_FALSE(Cidr::parse("not-an-address/8", &why));
    CHECK(why.find("is not a CIDR network") != std::string::npos);
    CHECK_FALSE(Cidr::parse("", &why));
}

TEST_CASE("Cidr refuses host bits beyond the prefix and suggests the network") {
    std::string why;
    CHECK_FALSE(Cidr::parse("10.1.2.3/8", &why));
    CHECK(why.find("(use 10.0.0.0/8)") != std::string::npos);
    CHECK_FALSE(Cidr::parse("2001:db8::1/64", &why));
    CHECK(why.find("(use 2001:db8::/64)") != std::string::npos);
}

TEST_CASE("reverse_name for IPv4 and IPv6 nibbles") {
    CHECK(reverse_name(ip("192.0.2.1")) == "1.2.0.192");
    CHECK(reverse_name(ip("127.0.0.2")) == "2.0.0.127");
    CHECK(reverse_name(ip("2001:db8::1")) ==
          "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2");
    CHECK(reverse_name(ip("::ffff:192.0.2.1")) == "1.2.0.192");
}
