#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "screen/smtp_dialog.h"

// The dialog in Enforce mode: the enforce action's responder for a client that failed a
// test before the handshake.

using namespace smtpscreen;
using Kind = DialogEvent::Kind;

namespace {

const std::string kReject = "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example";

DialogOptions enforce(int command_count_limit = 20) {
    DialogOptions o;
    o.mode = DialogMode::Enforce;
    o.hostname = "mx.example.net";
    o.client = "[192.0.2.1]:5678";
    o.reject_reply = kReject;
    o.command_count_limit = command_count_limit;
    return o;
}

// What one command line brought back, folded as the session carries it out.
struct Reply {
    std::string text;        // every Reply event's text
    bool close = false;      // a Close event came
    bool start_tls = false;  // a StartTls event came
};

struct Dialog {
    explicit Dialog(DialogOptions options = enforce()) : dialog(std::move(options)) {}
    SmtpDialog dialog;
    std::vector<std::string> logged;  // the Log events, in order

    Reply feed(const std::string& bytes) {
        Reply r;
        for (DialogEvent& e : dialog.feed(bytes)) {
            switch (e.kind) {
            case Kind::Reply: r.text += e.text; break;
            case Kind::Log: logged.push_back(e.text); break;
            case Kind::Close: r.close = true; break;
            case Kind::StartTls: r.start_tls = true; break;
            default: break;
            }
        }
        return r;
    }
    Reply say(const std::string& text) { return feed(text + "\r\n"); }
};

}  // namespace

TEST_CASE("EHLO gets a multi-line reply without PIPELINING, STARTTLS, AUTH or XCLIENT") {
    Dialog d;
    const auto r = d.say("EHLO client.example");
    // The deep mode's reply too (one engine): SMTPUTF8 as postscreen offers it.
    CHECK(r.text == "250-mx.example.net\r\n250-SIZE\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
                    "250-DSN\r\n250 SMTPUTF8\r\n");
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
    CHECK(bye.text == "221 2.0.0 mx.example.net Bye\r\n");
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
    const auto r = d.say(std::string(600, 'a'));
    CHECK(r.text == "500 5.5.2 Line too long\r\n");
    CHECK_FALSE(r.close);
}

// postscreen counts commands, not errors (postscreen_command_count_limit): the
// command beyond limits.command_count_limit is answered 421 and the session ends,
// whether the commands before it succeeded or not.
TEST_CASE("the command beyond command_count_limit ends the session with 421") {
    Dialog d;
    for (int i = 1; i < 20; ++i) {
        const auto r = d.say("BOGUS");
        CHECK(r.text == "502 5.5.2 Error: command not recognized\r\n");
        CHECK_FALSE(r.close);
    }
    CHECK(d.say("NOOP").text == "250 2.0.0 Ok\r\n");  // successes count too
    CHECK(d.dialog.command_count() == 20);
    const auto last = d.say("NOOP");
    CHECK(last.text == "421 4.7.0 mx.example.net Error: too many commands\r\n");
    CHECK(last.close);
    REQUIRE(d.logged.size() == 1);
    CHECK(d.logged[0] == "COMMAND COUNT LIMIT from [192.0.2.1]:5678");
    CHECK(d.dialog.finished());
    CHECK(d.feed("NOOP\r\n").text.empty());
}

TEST_CASE("rejected RCPTs count as commands, and QUIT is always answered") {
    SUBCASE("RCPT") {
        Dialog d;
        d.say("EHLO x");
        d.say("MAIL FROM:<a@b>");
        Reply r;
        int n = 0;
        while (!r.close && n < 100) {
            r = d.say("RCPT TO:<u@example.net>");
            ++n;
        }
        CHECK(n == 19);                   // EHLO, MAIL and 18 RCPTs are 20 commands
        CHECK(d.logged.size() == 18 + 1);  // 18 NOQUEUE lines and COMMAND COUNT LIMIT
    }
    SUBCASE("QUIT") {
        Dialog d(enforce(2));
        d.say("NOOP");
        d.say("NOOP");
        const auto bye = d.say("QUIT");
        CHECK(bye.text == "221 2.0.0 mx.example.net Bye\r\n");
        CHECK(bye.close);
    }
}

// The hole of a pregreet bot that streams "EHLO x" without reading a reply: each read
// is answered line by line until the limit, then nothing more is read or answered.
TEST_CASE("a client streaming commands in one read is closed at the limit, nothing answered after it") {
    Dialog d;
    std::string burst;
    for (int i = 0; i < 5000; ++i) burst += "EHLO x\r\n";
    std::vector<DialogEvent> events = d.dialog.feed(burst);
    size_t replies = 0;
    for (const DialogEvent& e : events) replies += e.kind == Kind::Reply;
    CHECK(replies == 21);  // 20 EHLO replies and the 421
    REQUIRE_FALSE(events.empty());
    CHECK(events.back().kind == Kind::Close);
    CHECK(events.back().text == "rejected");
    CHECK(events[events.size() - 2].text == "421 4.7.0 mx.example.net Error: too many commands\r\n");
    CHECK(d.dialog.feed(burst).empty());
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
    DialogOptions tls = enforce();
    tls.tls_available = true;
    Dialog d(tls);
    CHECK(d.say("EHLO c.example").text.find("250-STARTTLS\r\n") != std::string::npos);
    CHECK(d.say("MAIL FROM:<a@example.org>").text == "250 2.1.0 Ok\r\n");
    CHECK(d.say("STARTTLS now").text == "501 5.5.4 Syntax: STARTTLS\r\n");
    // Not inside a transaction (docs/design.md, "TLS"); RSET ends it.
    Reply refused = d.say("STARTTLS");
    CHECK(refused.text == "503 5.5.1 Error: MAIL transaction in progress\r\n");
    CHECK_FALSE(refused.start_tls);
    CHECK(d.say("RSET").text == "250 2.0.0 Ok\r\n");
    CHECK(d.say("MAIL FROM:<a@example.org>").text == "250 2.1.0 Ok\r\n");
    CHECK(d.say("RSET").text == "250 2.0.0 Ok\r\n");
    Reply ready = d.say("STARTTLS");
    CHECK(ready.text == "220 2.0.0 Ready to start TLS\r\n");
    CHECK(ready.start_tls);
    CHECK_FALSE(ready.close);
    d.dialog.tls_established();
    // RFC 3207 §4.2: nothing learned before TLS survives it.
    CHECK(d.say("MAIL FROM:<a@example.org>").text == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    CHECK(d.say("RCPT TO:<b@example.net>").text == "503 5.5.1 Error: need MAIL command\r\n");
    CHECK(d.say("EHLO c.example").text.find("STARTTLS") == std::string::npos);
    CHECK(d.say("STARTTLS").text == "554 5.5.1 Error: TLS already active\r\n");
}

TEST_CASE("without a certificate STARTTLS is neither offered nor started") {
    Dialog d;
    CHECK(d.say("EHLO c.example").text.find("STARTTLS") == std::string::npos);
    Reply reply = d.say("STARTTLS");
    CHECK(reply.text == "502 5.5.1 Error: command not implemented\r\n");
    CHECK_FALSE(reply.start_tls);
}

TEST_CASE("the command time limit ends an enforced session as it ends a deep-tested one") {
    Dialog d;
    d.say("EHLO c.example");
    d.logged.clear();
    const std::vector<DialogEvent> events = d.dialog.time_limit_exceeded();
    REQUIRE(events.size() == 3);
    CHECK(events[0].kind == Kind::Log);
    CHECK(events[0].text == "COMMAND TIME LIMIT from [192.0.2.1]:5678");
    CHECK(events[1].text == "421 4.4.2 mx.example.net Error: timeout exceeded\r\n");
    CHECK(events[2].kind == Kind::Close);
    CHECK(events[2].text == "timeout");
}

TEST_CASE("enforce_options: the reject reply, and limits.command_count_limit from the configuration") {
    Config c;
    c.command_count_limit = 7;
    c.deep_pipelining = true;  // the deep tests are not run on a client we enforce on
    c.hostname = "mx.example.net";
    const DialogOptions o = enforce_options(c, "[192.0.2.1]:5678", true, kReject);
    CHECK(o.mode == DialogMode::Enforce);
    CHECK(o.command_count_limit == 7);
    CHECK(o.reject_reply == kReject);
    CHECK(o.hostname == "mx.example.net");
    CHECK(o.tls_available);
    CHECK_FALSE(o.pipelining);
    CHECK_FALSE(o.non_smtp);
    CHECK_FALSE(o.bare_newline);
}

// The same engine in HealthCheck mode: a load balancer's own connection (PROXY v2 LOCAL,
// v1 UNKNOWN) is answered, never handed off, and offered nothing.
TEST_CASE("HealthCheck mode: 250 to EHLO/HELO/NOOP/RSET, 502 to the rest, 221 and close at QUIT") {
    DialogOptions o;
    o.mode = DialogMode::HealthCheck;
    o.hostname = "mx.example.net";
    o.tls_available = true;  // even so: a health check is offered no STARTTLS
    Dialog d(o);
    CHECK(d.say("EHLO lb.example").text == "250 mx.example.net\r\n");
    CHECK(d.say("HELO lb.example").text == "250 mx.example.net\r\n");
    CHECK(d.say("NOOP").text == "250 2.0.0 Ok\r\n");
    CHECK(d.say("RSET").text == "250 2.0.0 Ok\r\n");
    for (const char* line : {"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>", "DATA", "STARTTLS",
                             "VRFY root", "XCLIENT ADDR=192.0.2.1", "BDAT 10 LAST"}) {
        const auto r = d.say(line);
        CHECK_MESSAGE(r.text == "502 5.5.1 Error: command not implemented\r\n", line);
        CHECK_FALSE(r.start_tls);
    }
    CHECK(d.logged.empty());
    const auto quit = d.say("QUIT");
    CHECK(quit.text == "221 2.0.0 mx.example.net Bye\r\n");
    CHECK(quit.close);
    CHECK(d.dialog.finished());
}

TEST_CASE("reply_room: lines past the room wait, raw, and a later feed answers them in order") {
    // A client that pipelines without reading: the session gives the dialog the room its
    // client has left (Connection::kOutputCap minus what is unsent).
    SmtpDialog d(enforce(100000));
    std::string lines;
    for (int i = 0; i < 100; ++i) lines += "NOOP " + std::to_string(i) + "\r\n";
    lines += "QUIT\r\n";
    auto replies_of = [](const std::vector<DialogEvent>& events, bool* closed) {
        std::string text;
        for (const DialogEvent& e : events) {
            if (e.kind == Kind::Reply) text += e.text;
            if (e.kind == Kind::Close) *closed = true;
            CHECK(e.kind != Kind::LineStarted);  // a waiting line is no slow drip
        }
        return text;
    };
    bool closed = false;
    std::string got = replies_of(d.feed(lines, 100), &closed);
    // "250 2.0.0 Ok\r\n" is 14 octets: the room is full after the 8th reply.
    CHECK(got.size() == 8 * 14);
    CHECK(d.has_unhandled_lines());
    CHECK_FALSE(closed);
    CHECK(d.command_count() == 8);
    int feeds = 1;
    while (d.has_unhandled_lines() && feeds < 100) {
        got += replies_of(d.feed({}, 100), &closed);
        ++feeds;
    }
    CHECK(closed);
    CHECK(feeds == 13);  // 101 lines, 8 replies a feed
    CHECK(got.size() == 100 * 14 + std::string("221 2.0.0 mx.example.net Bye\r\n").size());
    CHECK(got.substr(got.size() - 30) == "221 2.0.0 mx.example.net Bye\r\n");
}

TEST_CASE("reply_room 0: nothing is answered and nothing is lost") {
    SmtpDialog d(enforce());
    auto events = d.feed("NOOP\r\nNOOP\r\n", 0);
    CHECK(events.empty());
    CHECK(d.has_unhandled_lines());
    std::string text;
    for (const DialogEvent& e : d.feed({})) text += e.text;
    CHECK(text == "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
    CHECK_FALSE(d.has_unhandled_lines());
}
