#include <doctest/doctest.h>

#include "screen/access_list.h"

using namespace smtpscreen;

namespace {

Endpoint ip(const char* text) {
    auto e = Endpoint::parse_ip(text);
    REQUIRE(e.has_value());
    return *e;
}

std::vector<AccessRule> parse_clean(std::string_view text) {
    std::vector<std::string> errors;
    auto rules = parse_access_list(text, "access.cidr", errors);
    CHECK(errors.empty());
    return rules;
}

}  // namespace

TEST_CASE("access list: the first matching rule wins") {
    auto rules = parse_clean(
        "192.0.2.10        permit\n"
        "192.0.2.0/24      reject\n"
        "192.0.2.11        permit\n");
    REQUIRE(rules.size() == 3);
    CHECK(match_access(rules, ip("192.0.2.10")) == AccessVerdict::Permit);
    CHECK(match_access(rules, ip("192.0.2.11")) == AccessVerdict::Reject);  // shadowed by the /24
    CHECK(match_access(rules, ip("192.0.2.99")) == AccessVerdict::Reject);
    CHECK_FALSE(match_access(rules, ip("198.51.100.1")));
}

TEST_CASE("access list: IPv4 and IPv6 rules, each matching its own family") {
    auto rules = parse_clean(
        "# our own networks\n"
        "\n"
        "2001:db8::/32   permit   # trailing comment\n"
        "\t10.0.0.0/8\tREJECT\r\n"
        "0.0.0.0/0 Permit\n");
    REQUIRE(rules.size() == 3);
    CHECK(match_access(rules, ip("2001:db8::25")) == AccessVerdict::Permit);
    CHECK_FALSE(match_access(rules, ip("2001:db9::25")));
    CHECK(match_access(rules, ip("10.2.3.4")) == AccessVerdict::Reject);
    CHECK(match_access(rules, ip("::ffff:10.2.3.4")) == AccessVerdict::Reject);
    CHECK(match_access(rules, ip("203.0.113.5")) == AccessVerdict::Permit);
}

TEST_CASE("access list: every bad line is reported with file and line, good lines kept") {
    std::vector<std::string> errors;
    auto rules = parse_access_list(
        "192.0.2.1 permit\n"
        "192.0.2.0/33 reject\n"
        "192.0.2.2\n"
        "192.0.2.3 allow\n"
        "192.0.2.4 permit extra\n"
        "10.1.0.0/8 reject\n"
        "198.51.100.0/24 reject\n",
        "/etc/smtpscreen/access.cidr", errors);
    CHECK(rules.size() == 2);
    REQUIRE(errors.size() == 5);
    CHECK(errors[0].rfind("/etc/smtpscreen/access.cidr:2: ", 0) == 0);
    CHECK(errors[0].find("prefix length") != std::string::npos);
    CHECK(errors[1].rfind("/etc/smtpscreen/access.cidr:3: ", 0) == 0);
    CHECK(errors[1].find("is not a rule") != std::string::npos);
    CHECK(errors[2].rfind("/etc/smtpscreen/access.cidr:4: \"allow\" is not an action (use permit or reject)", 0) == 0);
    CHECK(errors[3].rfind("/etc/smtpscreen/access.cidr:5: ", 0) == 0);
    CHECK(errors[4].rfind("/etc/smtpscreen/access.cidr:6: ", 0) == 0);
    CHECK(errors[4].find("use 10.0.0.0/8") != std::string::npos);
}

TEST_CASE("access list: an empty list matches nothing") {
    auto rules = parse_clean("# nothing here\n\n");
    CHECK(rules.empty());
    CHECK_FALSE(match_access(rules, ip("127.0.0.1")));
}
