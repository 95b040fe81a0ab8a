#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "screen/enforce_dialog.h"

using namespace smtpscreen;

namespace {

const std::string kReject = "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example";

struct Dialog {
    std::vector<std::string> logged;
    EnforceDialog dialog{"mx.example.net", "[192.0.2.1]:5678", kReject,
                         [this](const std::string& line) { logged.push_back(line); }};

    EnforceDialog::Reply say(const std::string& text) { return dialog.on_line(CommandLine{text, false, false}); }
};

}  // namespace

TEST_CASE("EHLO gets a multi-line reply without PIPELINING, STARTTLS, AUTH or XCLIENT") {
    Dialog d;
    const auto r = d.say("EHLO client.example");
    CHECK(r.text ==
          "250-mx.example.net\r\n250-SIZE\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n");
    CHECK_FALSE(r.close);
    for (const char* word : {"PIPELINING", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD", "CHUNKING"}) {
        CHECK(r.text.find(word) == std::string::npos);
    }
}

TEST_CASE("a whole enforced session: every RCPT is rejected and logged as postscreen does") {
    Dialog d;
    CHECK(d.say("EHLO client.example").text.substr(0, 4) == "250-");
    CHECK(d.say("MAIL FROM:<s@example.org> SIZE=100").text == "250 2.1.0 Ok\r\n");
    CHECK(d.say("RCPT TO:<r@example.net>").text == kReject + "\r\n");
    CHECK(d.say("rcpt to: <r2@example.net>").text == kReject + "\r\n");
    REQUIRE(d.logged.size() == 2);
    CHECK(d.logged[0] == "NOQUEUE: reject: RCPT from [192.0.2.1]:5678: " + kReject +
                             "; from=<s@example.org>, to=<r@example.net>, proto=ESMTP, helo=<client.example>");
    CHECK(d.logged[1].find("to=<r2@example.net>") != std::string::npos);
    CHECK(d.say("DATA").text == "554 5.5.1 Error: no valid recipients\r\n");
    CHECK(d.say("RSET").text == "250 2.0.0 Ok\r\n");
    const auto bye = d.say("QUIT");
    CHECK(bye.text == "221 2.0.0 Bye\r\n");
    CHECK(bye.close);
}

TEST_CASE("HELO answers one line and logs proto=SMTP") {
    Dialog d;
    CHECK(d.say("HELO client.example").text == "250 mx.example.net\r\n");
    d.say("MAIL FROM:<>");
    d.say("RCPT TO:<postmaster@example.net>");
    REQUIRE(d.logged.size() == 1);
    CHECK(d.logged[0].find("from=<>, to=<postmaster@example.net>, proto=SMTP, helo=<client.example>") !=
          std::string::npos);
}

TEST_CASE("commands out of order get postscreen's 503 replies") {
    Dialog d;
    CHECK(d.say("MAIL FROM:<a@b>").text == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    CHECK(d.say("RCPT TO:<a@b>").text == "503 5.5.1 Error: need MAIL command\r\n");
    CHECK(d.say("DATA").text == "503 5.5.1 Error: need RCPT command\r\n");
    d.say("EHLO x");
    CHECK(d.say("MAIL FROM:<a@b>").text == "250 2.1.0 Ok\r\n");
    CHECK(d.say("MAIL FROM:<a@b>").text == "503 5.5.1 Error: nested MAIL command\r\n");
    CHECK(d.logged.empty());
}

TEST_CASE("syntax errors") {
    Dialog d;
    CHECK(d.say("EHLO").text == "501 Syntax: EHLO hostname\r\n");
    CHECK(d.say("HELO   ").text == "501 Syntax: HELO hostname\r\n");
    d.say("EHLO x");
    CHECK(d.say("MAIL").text == "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    CHECK(d.say("MAIL FROM:a@b").text == "501 5.1.7 Bad sender address syntax\r\n");
    d.say("MAIL FROM:<a@b>");
    CHECK(d.say("RCPT <a@b>").text == "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    CHECK(d.say("RCPT TO:a@b").text == "501 5.1.3 Bad recipient address syntax\r\n");
    CHECK(d.say("DATA now").text == "501 5.5.4 Syntax: DATA\r\n");
    CHECK(d.logged.empty());
}

TEST_CASE("VRFY, EXPN, ETRN, NOOP and commands that are not offered") {
    Dialog d;
    CHECK(d.say("NOOP").text == "250 2.0.0 Ok\r\n");
    CHECK(d.say("VRFY root").text == "502 5.5.1 VRFY command is disabled\r\n");
    CHECK(d.say("VRFY").text == "501 5.5.4 Syntax: VRFY address\r\n");
    CHECK(d.say("EXPN staff").text == "502 5.5.1 EXPN command is disabled\r\n");
    CHECK(d.say("ETRN example.net").text == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    d.say("EHLO x");
    CHECK(d.say("ETRN example.net").text == "458 Unable to queue messages\r\n");
    for (const char* cmd : {"STARTTLS", "AUTH PLAIN AGFiYwBkZWY=", "XCLIENT ADDR=1.2.3.4", "XFORWARD NAME=x",
                            "BDAT 100 LAST"}) {
        CHECK(d.say(cmd).text == "502 5.5.1 Error: command not implemented\r\n");
    }
    CHECK(d.say("GET / HTTP/1.1").text == "502 5.5.2 Error: command not recognized\r\n");
    CHECK(d.say("").text == "502 5.5.2 Error: command not recognized\r\n");
}

TEST_CASE("too long lines are refused") {
    Dialog d;
    const auto r = d.dialog.on_line(CommandLine{std::string(510, 'a'), false, true});
    CHECK(r.text == "500 5.5.2 Line too long\r\n");
    CHECK_FALSE(r.close);
}

TEST_CASE("the 20th error reply ends the session with 421") {
    Dialog d;
    for (int i = 1; i < 20; ++i) {
        const auto r = d.say("BOGUS");
        CHECK(r.text == "502 5.5.2 Error: command not recognized\r\n");
        CHECK_FALSE(r.close);
    }
    CHECK(d.say("NOOP").text == "250 2.0.0 Ok\r\n");  // successes do not count
    const auto last = d.say("BOGUS");
    CHECK(last.text == "502 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.example.net Error: too many errors\r\n");
    CHECK(last.close);
}

TEST_CASE("rejected RCPTs count as errors, as in Postfix smtpd") {
    Dialog d;
    d.say("EHLO x");
    d.say("MAIL FROM:<a@b>");
    EnforceDialog::Reply r;
    int n = 0;
    while (!r.close && n < 100) {
        r = d.say("RCPT TO:<u@example.net>");
        ++n;
    }
    CHECK(n == 20);
    CHECK(d.logged.size() == 20);
}

TEST_CASE("client text in the log line cannot forge log lines") {
    Dialog d;
    d.say(std::string("EHLO evil\rhost\x01", 15));
    d.say("MAIL FROM:<a\r@b>");
    d.say("RCPT TO:<c@d>");
    REQUIRE(d.logged.size() == 1);
    CHECK(d.logged[0].find("from=<a?@b>") != std::string::npos);
    CHECK(d.logged[0].find("helo=<evil?host?>") != std::string::npos);
}

TEST_CASE("source routes are stripped from logged addresses, as postscreen does") {
    Dialog d;
    d.say("HELO x");
    d.say("MAIL FROM:<@relay.example:s@example.org>");
    d.say("RCPT TO:<@a,@b:r@example.net>");
    REQUIRE(d.logged.size() == 1);
    CHECK(d.logged[0].find("from=<s@example.org>, to=<r@example.net>") != std::string::npos);
}

TEST_CASE("with a certificate, STARTTLS is offered and answered, and TLS starts the session over") {
    Dialog d;
    d.dialog.offer_starttls(true);
    CHECK(d.say("EHLO c.example").text.find("250-STARTTLS\r\n") != std::string::npos);
    CHECK(d.say("MAIL FROM:<a@example.org>").text == "250 2.1.0 Ok\r\n");
    CHECK(d.say("STARTTLS now").text == "501 5.5.4 Syntax: STARTTLS\r\n");
    EnforceDialog::Reply ready = d.say("STARTTLS");
    CHECK(ready.text == "220 2.0.0 Ready to start TLS\r\n");
    CHECK(ready.start_tls);
    CHECK_FALSE(ready.close);
    d.dialog.tls_established();
    // RFC 3207 §4.2: nothing learned before TLS survives it.
    CHECK(d.say("MAIL FROM:<a@example.org>").text == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    CHECK(d.say("EHLO c.example").text.find("STARTTLS") == std::string::npos);
    CHECK(d.say("STARTTLS").text == "554 5.5.1 Error: TLS already active\r\n");
}

TEST_CASE("without a certificate STARTTLS is neither offered nor started") {
    Dialog d;
    CHECK(d.say("EHLO c.example").text.find("STARTTLS") == std::string::npos);
    EnforceDialog::Reply reply = d.say("STARTTLS");
    CHECK(reply.text == "502 5.5.1 Error: command not implemented\r\n");
    CHECK_FALSE(reply.start_tls);
}
