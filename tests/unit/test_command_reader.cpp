#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "screen/command_reader.h"

using namespace smtpscreen;

TEST_CASE("CRLF and bare LF both end a line, and the reader says which") {
    CommandReader r;
    r.feed("EHLO a\r\nMAIL FROM:<x>\nQUIT\r\n");
    auto l = r.next();
    REQUIRE(l);
    CHECK(l->text == "EHLO a");
    CHECK_FALSE(l->bare_lf);
    l = r.next();
    REQUIRE(l);
    CHECK(l->text == "MAIL FROM:<x>");
    CHECK(l->bare_lf);
    l = r.next();
    REQUIRE(l);
    CHECK(l->text == "QUIT");
    CHECK_FALSE(l->bare_lf);
    CHECK_FALSE(r.next());
    CHECK_FALSE(r.has_partial());
}

TEST_CASE("a line split across reads, even between CR and LF, is one line") {
    CommandReader r;
    r.feed("EH");
    CHECK(r.has_partial());
    CHECK_FALSE(r.next());
    r.feed("LO a\r");
    CHECK(r.has_partial());
    CHECK_FALSE(r.next());
    r.feed("\n");
    auto l = r.next();
    REQUIRE(l);
    CHECK(l->text == "EHLO a");
    CHECK_FALSE(l->bare_lf);
    CHECK_FALSE(r.has_partial());
}

TEST_CASE("byte-at-a-time input gives the same lines") {
    const std::string input = "HELO a\r\nNOOP\nX\rY\r\n\r\n";
    CommandReader r;
    for (char c : input) r.feed(std::string_view(&c, 1));
    CHECK(r.next()->text == "HELO a");
    auto noop = r.next();
    CHECK(noop->text == "NOOP");
    CHECK(noop->bare_lf);
    CHECK(r.next()->text == "X\rY");
    CHECK(r.next()->text == "");
    CHECK_FALSE(r.next());
}

TEST_CASE("a bare CR inside a line is just a byte") {
    CommandReader r;
    r.feed("A\rB\r\r\n");
    auto l = r.next();
    REQUIRE(l);
    CHECK(l->text == "A\rB\r");
    CHECK_FALSE(l->bare_lf);
}

TEST_CASE("NUL bytes are kept as bytes") {
    CommandReader r;
    r.feed(std::string_view("NO\0OP\r\n", 7));
    auto l = r.next();
    REQUIRE(l);
    CHECK(l->text == std::string("NO\0OP", 5));
}

TEST_CASE("the 512-octet limit counts the CRLF (RFC 5321 4.5.3.1.4)") {
    CommandReader r(512);
    r.feed(std::string(510, 'a') + "\r\n");
    auto l = r.next();
    REQUIRE(l);
    CHECK_FALSE(l->too_long);
    CHECK(l->text.size() == 510);

    r.feed(std::string(511, 'b') + "\r\nNOOP\r\n");
    l = r.next();
    REQUIRE(l);
    CHECK(l->too_long);
    CHECK(l->text == std::string(510, 'b'));
    l = r.next();
    REQUIRE(l);
    CHECK(l->text == "NOOP");
    CHECK_FALSE(l->too_long);
}

TEST_CASE("a too long line is truncated and the rest of it discarded until its end") {
    CommandReader r(16);
    r.feed("0123456789abcdefghij");
    r.feed("klmnop");
    CHECK_FALSE(r.next());
    r.feed("qrs\r\nNEXT\r\n");
    auto l = r.next();
    REQUIRE(l);
    CHECK(l->too_long);
    CHECK(l->text == "0123456789abcd");
    CHECK(r.next()->text == "NEXT");
}

TEST_CASE("10 MB without a newline stays bounded and the next line still parses") {
    CommandReader r(512);
    const std::string chunk(64 * 1024, 'x');
    for (int i = 0; i < 160; ++i) r.feed(chunk);
    CHECK(r.has_partial());
    CHECK(r.pending_lines() == 0);
    r.feed("\r\nQUIT\r\n");
    auto l = r.next();
    REQUIRE(l);
    CHECK(l->too_long);
    CHECK(l->text.size() == 510);
    CHECK(r.next()->text == "QUIT");
}

TEST_CASE("lines beyond max_pending_lines are dropped and flagged") {
    CommandReader r(512, 3);
    std::string many;
    for (int i = 0; i < 100000; ++i) many += "NOOP\r\n";
    r.feed(many);
    CHECK(r.overflowed());
    CHECK(r.pending_lines() == 3);
    int count = 0;
    while (r.next()) ++count;
    CHECK(count == 3);
}

TEST_CASE("parse_command splits the verb at a space or a colon") {
    auto c = parse_command("mail FROM:<a@b>");
    CHECK(c.verb == "MAIL");
    CHECK(c.args == "FROM:<a@b>");

    c = parse_command("MAIL FROM:<a@b> SIZE=10");
    CHECK(c.verb == "MAIL");
    CHECK(c.args == "FROM:<a@b> SIZE=10");

    c = parse_command("QUIT");
    CHECK(c.verb == "QUIT");
    CHECK(c.args == "");

    c = parse_command("Host: example.com");
    CHECK(c.verb == "HOST");
    CHECK(c.args == ": example.com");

    c = parse_command("EHLO  two.spaces");
    CHECK(c.verb == "EHLO");
    CHECK(c.args == " two.spaces");

    c = parse_command("");
    CHECK(c.verb == "");
    CHECK(c.args == "");

    c = parse_command(std::string_view("NO\0OP x", 7));
    CHECK(c.verb == std::string("NO\0OP", 5));
}

TEST_CASE("mail_address pulls the address out of MAIL and RCPT arguments") {
    CHECK(mail_address("FROM:<a@b>", "FROM") == "a@b");
    CHECK(mail_address("from:<a@b> SIZE=1", "FROM") == "a@b");
    CHECK(mail_address("FROM: <a@b>", "FROM") == "a@b");
    CHECK(mail_address("FROM:<>", "FROM") == "");
    CHECK(mail_address("TO:<>", "TO") == "");
    CHECK(mail_address("TO:<c@d>", "TO:") == "c@d");
    CHECK(mail_address("TO:<\"a>b\"@d>", "TO") == "\"a>b\"@d");
    CHECK(mail_address("TO:<@r1,@r2:u@d>", "TO") == "@r1,@r2:u@d");

    CHECK_FALSE(mail_address("FROM:a@b", "FROM"));
    CHECK_FALSE(mail_address("FROM:<a@b", "FROM"));
    CHECK_FALSE(mail_address("FROM:<a@b>x", "FROM"));
    CHECK_FALSE(mail_address("FROM <a@b>", "FROM"));
    CHECK_FALSE(mail_address("TO:<a@b>", "FROM"));
    CHECK_FALSE(mail_address("", "FROM"));
    CHECK_FALSE(mail_address("FROM:", "FROM"));
}

TEST_CASE("however the bytes are split into reads, the lines are the same") {
    const std::string input = std::string("EHLO a\r\nMAIL FROM:<x>\nNO\0OP\r\r\n", 30) + std::string(700, 'z') +
                              "\r\nRCPT TO:<y>\r\n\r\nQUIT\r";
    auto collect = [](CommandReader& r) {
        std::vector<CommandLine> out;
        while (auto l = r.next()) out.push_back(*l);
        return out;
    };
    CommandReader whole;
    whole.feed(input);
    const auto expected = collect(whole);
    REQUIRE(expected.size() == 6);
    uint32_t seed = 7;
    for (int round = 0; round < 500; ++round) {
        CommandReader r;
        size_t pos = 0;
        while (pos < input.size()) {
            seed = seed * 1103515245u + 12345u;
            const size_t n = 1 + (seed >> 8) % 40;
            r.feed(std::string_view(input).substr(pos, n));
            pos += n;
        }
        const auto got = collect(r);
        REQUIRE(got.size() == expected.size());
        for (size_t i = 0; i < got.size(); ++i) {
            CHECK(got[i].text == expected[i].text);
            CHECK(got[i].bare_lf == expected[i].bare_lf);
            CHECK(got[i].too_long == expected[i].too_long);
        }
        CHECK(r.has_partial());  // the final "QUIT\r" waits for its LF
    }
}
