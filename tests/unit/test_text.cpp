// core/text.h: ASCII-only case folding (never the locale's), trimming and splitting as
// the configuration, access-list, DNSBL-site and SMTP parsers use them.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/text.h"

using namespace smtpscreen;

TEST_CASE("text: case folding touches ASCII letters only") {
    CHECK(ascii_lower("MAIL From:<A@Example.ORG>") == "mail from:<a@example.org>");
    CHECK(ascii_upper("ehlo x-1_z") == "EHLO X-1_Z");
    // 8-bit bytes stay as they are, whatever the locale would say about them.
    CHECK(ascii_lower("\xC4\xD6@") == "\xC4\xD6@");
    CHECK(ascii_upper("\xe4\xf6`{") == "\xe4\xf6`{");
    CHECK(ascii_lower('Z') == 'z');
    CHECK(ascii_upper('a') == 'A');
    CHECK(ascii_lower('[') == '[');
}

TEST_CASE("text: iequals compares without ASCII case, and only whole strings") {
    CHECK(iequals("XCLIENT", "xClient"));
    CHECK(iequals("", ""));
    CHECK_FALSE(iequals("DATA", "DAT"));
    CHECK_FALSE(iequals("DATA", "DATA "));
    CHECK_FALSE(iequals("\xe4", "\xc4"));  // Latin-1 a-umlaut and A-umlaut are not ASCII
    CHECK_FALSE(iequals("@", "`"));        // 0x40 and 0x60 differ by the case bit only
}

TEST_CASE("text: trim removes the given characters at both ends only") {
    CHECK(trim("  a b \t\r", " \t\r") == "a b");
    CHECK(trim("\n a \n", " \t") == "\n a \n");
    CHECK(trim(" \t ", " \t").empty());
    CHECK(trim("", " ").empty());
    CHECK(trim("x", " ") == "x");
}

TEST_CASE("text: split keeps empty pieces and splits on the whole separator") {
    CHECK(split("a,,b", ",") == std::vector<std::string_view>{"a", "", "b"});
    CHECK(split("", ",") == std::vector<std::string_view>{""});
    CHECK(split("1..5", "..") == std::vector<std::string_view>{"1", "5"});
    CHECK(split("1.5", "..") == std::vector<std::string_view>{"1.5"});
    CHECK(split("a.", ".") == std::vector<std::string_view>{"a", ""});
}
