#include <doctest/doctest.h>

#include "screen/ehlo_keywords.h"
#include "screen/replies.h"
#include "screen/smtp_dialog.h"

using namespace smtpscreen;

namespace {

// A Debian 12 Postfix with smtpd_discard_ehlo_keywords = dsn, smtputf8, behind which
// XCLIENT and XFORWARD are authorized for smtpscreen's address.
constexpr std::string_view kPostfixReply =
    "250-backend.test\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-VRFY\r\n"
    "250-ETRN\r\n"
    "250-STARTTLS\r\n"
    "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n"
    "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n"
    "250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n"
    "250 CHUNKING\r\n";

// Exim 4.96's reply to a host it advertises everything to.
constexpr std::string_view kEximReply =
    "250-exim.test Hello client.example.org [192.0.2.1]\r\n"
    "250-SIZE 52428800\r\n"
    "250-LIMITS MAILMAX=1000 RCPTMAX=50000\r\n"
    "250-8BITMIME\r\n"
    "250-PIPELINING\r\n"
    "250-PIPE_CONNECT\r\n"
    "250-AUTH PLAIN LOGIN\r\n"
    "250-CHUNKING\r\n"
    "250-PRDR\r\n"
    "250 HELP\r\n";

}  // namespace

TEST_CASE("ehlo_reply_keywords: every line after the server's name, parameters kept") {
    CHECK(ehlo_reply_keywords(kPostfixReply) ==
          std::vector<std::string>{"PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS",
                                   "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
                                   "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT", "ENHANCEDSTATUSCODES",
                                   "8BITMIME", "CHUNKING"});
    CHECK(ehlo_reply_keywords("250 backend.test\r\n").empty());
    // LF alone, and lines that are no EHLO lines (control bytes, a leading hyphen) are left out.
    CHECK(ehlo_reply_keywords("250-a\n250-DSN\n250--BAD\n250-X\x01Y\n250 8BITMIME\n") ==
          std::vector<std::string>{"DSN", "8BITMIME"});
}

TEST_CASE("offerable_keywords: the backend's keywords less what the dialog cannot keep before the handoff") {
    CHECK(offerable_keywords(ehlo_reply_keywords(kPostfixReply)) ==
          std::vector<std::string>{"SIZE 10240000", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME"});
    CHECK(offerable_keywords(ehlo_reply_keywords(kEximReply)) ==
          std::vector<std::string>{"SIZE 52428800", "LIMITS MAILMAX=1000 RCPTMAX=50000", "8BITMIME", "PRDR"});
    for (const char* word : {"xclient", "XFORWARD", "Chunking", "BINARYMIME", "STARTTLS", "PIPELINING",
                             "X_PIPE_CONNECT", "AUTH LOGIN", "VRFY", "HELP"}) {
        CAPTURE(word);
        CHECK_FALSE(unofferable_reason(word).empty());
    }
    for (const char* word : {"DSN", "SMTPUTF8", "SIZE", "ETRN", "8BITMIME", "ENHANCEDSTATUSCODES", "REQUIRETLS"}) {
        CAPTURE(word);
        CHECK(unofferable_reason(word).empty());
    }
}

TEST_CASE("valid_ehlo_line: a keyword, then printable parameters") {
    CHECK(valid_ehlo_line("SIZE 10240000"));
    CHECK(valid_ehlo_line("X-EXPERIMENT a=b"));
    CHECK_FALSE(valid_ehlo_line(""));
    CHECK_FALSE(valid_ehlo_line(" SIZE"));
    CHECK_FALSE(valid_ehlo_line("-SIZE"));
    CHECK_FALSE(valid_ehlo_line("SI.ZE"));
    CHECK_FALSE(valid_ehlo_line("SIZE \x7f"));
}

TEST_CASE("the dialog's EHLO reply offers exactly its keywords, and a bare name when there are none") {
    DialogOptions o;
    o.hostname = "mx.example.net";
    o.ehlo_keywords = {"SIZE 10240000", "8BITMIME"};
    SmtpDialog with(o);
    auto events = with.feed("EHLO c.example\r\n");
    REQUIRE(events.size() == 1);
    CHECK(events[0].text == "250-mx.example.net\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n");

    o.ehlo_keywords.clear();
    SmtpDialog bare(o);
    events = bare.feed("EHLO c.example\r\n");
    REQUIRE(events.size() == 1);
    CHECK(events[0].text == "250 mx.example.net\r\n");
    CHECK(replies::ehlo("mx.example.net", {}, true) == "250-mx.example.net\r\n250 STARTTLS\r\n");
}

TEST_CASE("tls_first_keywords: what the relay shows of the backend's reply, less STARTTLS and early pipelining") {
    const std::vector<std::string> backend{"PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "AUTH PLAIN LOGIN",
                                           "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING",
                                           "BINARYMIME", "XCLIENT NAME ADDR", "xforward NAME", "PIPE_CONNECT", "HELP"};
    CHECK(tls_first_keywords(backend) ==
          std::vector<std::string>{"PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "AUTH PLAIN LOGIN",
                                   "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "HELP"});
    CHECK(tls_first_keywords({}).empty());
}
