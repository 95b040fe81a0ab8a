#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "screen/deep_tests.h"

using namespace smtpscreen;

namespace {

const std::string kClient = "[192.0.2.1]:5678";
const std::vector<std::string> kForbidden{"CONNECT", "GET", "POST", "USER", "PASS"};

std::optional<std::string> non_smtp(const std::string& line) {
    return check_non_smtp(kClient, "CONNECT", line, kForbidden);
}

}  // namespace

TEST_CASE("pipelining: nothing unread passes, anything unread fails with postscreen's line") {
    CHECK_FALSE(check_pipelining(kClient, "EHLO", ""));
    const auto log = check_pipelining(kClient, "EHLO", "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@exa");
    REQUIRE(log);
    CHECK(*log == "COMMAND PIPELINING from [192.0.2.1]:5678 after EHLO: MAIL FROM:<a@example.org>\\r\\nRCPT TO:<b@exa");
}

TEST_CASE("pipelining: the excerpt is bounded to 100 octets and escapes what could forge a log line") {
    const auto log = check_pipelining(kClient, "MAIL", std::string(300, 'x'));
    REQUIRE(log);
    CHECK(*log == "COMMAND PIPELINING from [192.0.2.1]:5678 after MAIL: " + std::string(100, 'x') + "...");
    const auto binary = check_pipelining(kClient, "NOOP", std::string("\x00\x1b[2J\\\xff", 7));
    REQUIRE(binary);
    CHECK(*binary == "COMMAND PIPELINING from [192.0.2.1]:5678 after NOOP: \\x00\\x1b[2J\\x5c\\xff");
}

TEST_CASE("non-SMTP: each forbidden command fails, whatever its case") {
    for (const char* line : {"CONNECT mx.example.net:25 HTTP/1.1", "GET / HTTP/1.0", "post /cgi HTTP/1.1", "USER root",
                             "PASS secret", "Get /"}) {
        CAPTURE(line);
        const auto log = non_smtp(line);
        REQUIRE(log);
        CHECK(*log == std::string("NON-SMTP COMMAND from [192.0.2.1]:5678 after CONNECT: ") + line);
    }
}

TEST_CASE("non-SMTP: the configured list replaces the default one") {
    const std::vector<std::string> only_foo{"FOO"};
    CHECK(check_non_smtp(kClient, "EHLO", "foo bar", only_foo));
    CHECK_FALSE(check_non_smtp(kClient, "EHLO", "GET / HTTP/1.0", only_foo));
    CHECK_FALSE(check_non_smtp(kClient, "EHLO", "GET / HTTP/1.0", {}));
}

TEST_CASE("non-SMTP: header-shaped lines fail, SMTP commands with a colon do not") {
    CHECK(non_smtp("Host: mx.example.net"));
    CHECK(non_smtp("User-Agent: curl/8.0"));
    CHECK(non_smtp("Content-Length:0"));
    const auto log = check_non_smtp(kClient, "NOOP", "Host: mx.example.net", kForbidden);
    REQUIRE(log);
    CHECK(*log == "NON-SMTP COMMAND from [192.0.2.1]:5678 after NOOP: Host: mx.example.net");
    // A space before the colon is not a header; MAIL: is a malformed command, not a header.
    CHECK_FALSE(non_smtp("Host : mx.example.net"));
    CHECK_FALSE(non_smtp("MAIL:<a@example.org>"));
    CHECK_FALSE(non_smtp("mail from:<a@example.org>"));
    CHECK_FALSE(non_smtp("RCPT TO:<b@example.net>"));
}

TEST_CASE("non-SMTP: a line that does not start with a letter fails") {
    CHECK(non_smtp(""));
    CHECK(non_smtp(" EHLO client.example"));
    CHECK(non_smtp("\x16\x03\x01\x02\x00"));
    CHECK(non_smtp("1 HELO x"));
    const auto log = non_smtp(std::string("\x16\x03\x01", 3));
    REQUIRE(log);
    CHECK(*log == "NON-SMTP COMMAND from [192.0.2.1]:5678 after CONNECT: \\x16\\x03\\x01");
}

TEST_CASE("non-SMTP: ordinary and unknown SMTP-looking commands pass") {
    for (const char* line : {"EHLO client.example", "HELO x", "MAIL FROM:<>", "QUIT", "NOOP", "XYZZY plugh", "STARTTLS"}) {
        CAPTURE(line);
        CHECK_FALSE(non_smtp(line));
    }
}

TEST_CASE("bare newline: only a line that ended in LF without CR fails") {
    CHECK_FALSE(check_bare_newline(kClient, "CONNECT", CommandLine{"EHLO x", false, false}));
    const auto log = check_bare_newline(kClient, "EHLO", CommandLine{"MAIL FROM:<>", true, false});
    REQUIRE(log);
    CHECK(*log == "BARE NEWLINE from [192.0.2.1]:5678 after EHLO");
}

TEST_CASE("the SMTP verb list knows the extensions' verbs") {
    for (const char* verb : {"EHLO", "STARTTLS", "AUTH", "BDAT", "XCLIENT", "XFORWARD", "ETRN", "VRFY", "EXPN"}) {
        CAPTURE(verb);
        CHECK(is_smtp_verb(verb));
    }
    CHECK_FALSE(is_smtp_verb("HOST"));
    CHECK_FALSE(is_smtp_verb("GET"));
}
