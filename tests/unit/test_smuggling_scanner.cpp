// proxy/smuggling_scanner.h on its own: message content between the backend's 354 and
// the client's end of data. The relay as a whole is tested in test_relay_filter.cpp.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <string_view>

#include "proxy/smuggling_scanner.h"

using namespace smtpscreen;

namespace {

SmugglingScanner::Options mode(BareLf bare_lf, size_t max_text_line = 1000) {
    SmugglingScanner::Options options;
    options.bare_lf = bare_lf;
    options.max_text_line = max_text_line;
    return options;
}

struct Scan {
    std::optional<size_t> end;
    std::string forwarded;
};

Scan scan(SmugglingScanner& scanner, std::string_view in) {
    Scan s;
    s.end = scanner.scan(in, s.forwarded);
    return s;
}

}  // namespace

TEST_CASE("smuggling scanner: a clean message goes through whole, its end of data included") {
    SmugglingScanner scanner(mode(BareLf::Reject));
    scanner.begin();
    const std::string message = "Subject: x\r\n\r\n..stuffed\r\nbody\r\n.\r\n";
    Scan s = scan(scanner, message + "QUIT\r\n");
    REQUIRE(s.end);
    CHECK(*s.end == message.size());
    CHECK(s.forwarded == message);
    CHECK(scanner.refusal() == SmugglingScanner::Refusal::None);
}

TEST_CASE("smuggling scanner: the end of data is found however the input is cut") {
    const std::string message = "a\r\nb\r\n.\r\n";
    for (size_t cut = 0; cut <= message.size(); ++cut) {
        INFO("cut at ", cut);
        SmugglingScanner scanner(mode(BareLf::Reject));
        scanner.begin();
        Scan first = scan(scanner, std::string_view(message).substr(0, cut));
        if (first.end) {
            CHECK(*first.end == message.size());
            CHECK(cut == message.size());
            continue;
        }
        Scan second = scan(scanner, std::string_view(message).substr(cut));
        REQUIRE(second.end);
        CHECK(*second.end == message.size() - cut);
        CHECK(first.forwarded + second.forwarded == message);
    }
}

TEST_CASE("smuggling scanner: a CR at the end of an input waits for the next octet") {
    SmugglingScanner scanner(mode(BareLf::Reject));
    scanner.begin();
    CHECK(scan(scanner, "abc\r").forwarded == "abc");
    CHECK(scanner.holds_cr());
    CHECK(scan(scanner, "\n").forwarded == "\r\n");
    CHECK_FALSE(scanner.holds_cr());
}

TEST_CASE("smuggling scanner, reject: nothing from the bare LF on, and the real end is still found") {
    SmugglingScanner scanner(mode(BareLf::Reject));
    scanner.begin();
    Scan s = scan(scanner, "ok\r\nbad\n.\nMAIL FROM:<x>\r\n.\r\nRSET\r\n");
    CHECK(s.forwarded == "ok\r\nbad");
    CHECK(scanner.refusal() == SmugglingScanner::Refusal::BareLf);
    REQUIRE(s.end);
    CHECK(std::string_view("ok\r\nbad\n.\nMAIL FROM:<x>\r\n.\r\nRSET\r\n").substr(*s.end) == "RSET\r\n");
    CHECK(refusal_replies(scanner.refusal()).starts_with("550 5.5.2 Message contains bare <LF>\r\n421 "));
}

TEST_CASE("smuggling scanner, reject: a bare CR refuses too, even when it ends an input") {
    SmugglingScanner scanner(mode(BareLf::Reject));
    scanner.begin();
    CHECK(scan(scanner, "x\r").forwarded == "x");
    Scan s = scan(scanner, ".\r\n.\r\n");
    CHECK(s.forwarded.empty());
    CHECK(scanner.refusal() == SmugglingScanner::Refusal::BareCr);
    CHECK(s.end == std::optional<size_t>(6));   // "\r" "." "\r\n" is no end: it ended no line
}

TEST_CASE("smuggling scanner, normalize: bare line ends become CRLF and never make an end of data") {
    SmugglingScanner scanner(mode(BareLf::Normalize));
    scanner.begin();
    Scan s = scan(scanner, "a\n.\nb\r.\r\n.b\r\n.\r\n");
    REQUIRE(s.end);
    CHECK(s.forwarded == "a\r\n..\r\nb\r\n..\r\n.b\r\n.\r\n");
    CHECK(scanner.refusal() == SmugglingScanner::Refusal::None);
}

TEST_CASE("smuggling scanner: a text line over the limit refuses the message") {
    SmugglingScanner scanner(mode(BareLf::Normalize, 10));   // 8 octets of text
    scanner.begin();
    Scan s = scan(scanner, "12345678\r\n123456789\r\n.\r\n");
    CHECK(s.forwarded == "12345678\r\n12345678");
    CHECK(scanner.refusal() == SmugglingScanner::Refusal::LongLine);
    CHECK(s.end == std::optional<size_t>(24));
    CHECK(refusal_replies(SmugglingScanner::Refusal::LongLine).starts_with("550 5.5.2 Message line too long\r\n"));
    CHECK(refusal_replies(SmugglingScanner::Refusal::None).empty());
}

TEST_CASE("smuggling scanner: begin() starts a new message after a refused one") {
    SmugglingScanner scanner(mode(BareLf::Reject));
    scanner.begin();
    scan(scanner, "x\ny\r");
    REQUIRE(scanner.refusal() == SmugglingScanner::Refusal::BareLf);
    scanner.begin();
    CHECK(scanner.refusal() == SmugglingScanner::Refusal::None);
    CHECK_FALSE(scanner.holds_cr());
    Scan s = scan(scanner, ".\r\n");   // a first line of "." ends it: the data phase starts at a line start
    CHECK(s.end == std::optional<size_t>(3));
    CHECK(s.forwarded == ".\r\n");
}
