#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "screen/smtp_dialog.h"
#include "dialog_events.h"

// The dialog in Deep mode: the deep protocol tests up to the first RCPT TO.

using namespace smtpscreen;
using Kind = DialogEvent::Kind;
using test::kinds;
using test::replies;

namespace {

const std::string kClient = "[192.0.2.1]:5678";
// The enforce mode's reply too (one engine): ETRN offered as postscreen does.
const std::string kEhloReply =
    "250-mx.example.net\r\n250-SIZE\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
    "250 SMTPUTF8\r\n";

DialogOptions all_tests(Action action = Action::Enforce) {
    DialogOptions o;
    o.pipelining = o.non_smtp = o.bare_newline = true;
    o.action = action;
    o.mode = DialogMode::Deep;
    o.hostname = "mx.example.net";
    o.client = kClient;
    return o;
}

std::vector<std::string> texts(const std::vector<DialogEvent>& events, Kind kind) {
    std::vector<std::string> out;
    for (const auto& e : events) {
        if (e.kind == kind) out.push_back(e.text);
    }
    return out;
}

const DialogEvent* find(const std::vector<DialogEvent>& events, Kind kind) {
    for (const auto& e : events) {
        if (e.kind == kind) return &e;
    }
    return nullptr;
}

}  // namespace

TEST_CASE("a well-behaved client is handed off at its first RCPT with the exact lines recorded") {
    SmtpDialog d(all_tests());
    CHECK(replies(d.feed("EHLO client.example.org\r\n")) == kEhloReply);
    CHECK(replies(d.feed("MAIL FROM:<sender@example.org> SIZE=12345 BODY=8BITMIME\r\n")) == "250 2.1.0 Ok\r\n");
    const auto events = d.feed("RCPT TO:<rcpt@example.net> NOTIFY=SUCCESS,FAILURE\r\n");
    REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});  // the RCPT is not answered by us
    const SmtpTransaction& tx = events[0].tx;
    CHECK(tx.helo_verb == "EHLO");
    CHECK(tx.helo_name == "client.example.org");
    CHECK(tx.mail_line == "MAIL FROM:<sender@example.org> SIZE=12345 BODY=8BITMIME");
    CHECK(tx.mail_from == "sender@example.org");
    CHECK(tx.rcpt_line == "RCPT TO:<rcpt@example.net> NOTIFY=SUCCESS,FAILURE");
    CHECK(tx.rcpt_to == "rcpt@example.net");
    CHECK_FALSE(tx.tls);
    CHECK(tx.replay_lines() == std::vector<std::string>{"EHLO client.example.org\r\n",
                                                        "MAIL FROM:<sender@example.org> SIZE=12345 BODY=8BITMIME\r\n",
                                                        "RCPT TO:<rcpt@example.net> NOTIFY=SUCCESS,FAILURE\r\n"});
    CHECK(d.passed());
    CHECK(d.finished());
    CHECK(d.take_unprocessed().empty());
}

TEST_CASE("MAIL parameters and the client's spelling are kept verbatim for the replay") {
    SmtpDialog d(all_tests());
    d.feed("ehlo  client.example.org extra words\r\n");
    d.feed("mail from: <j\xc3\xb6rg@example.org> SMTPUTF8 RET=HDRS ENVID=QQ314159\r\n");
    const auto events = d.feed("rcpt to:<postmaster@example.net>\r\n");
    const DialogEvent* handoff = find(events, Kind::Handoff);
    REQUIRE(handoff);
    CHECK(handoff->tx.helo_verb == "EHLO");
    CHECK(handoff->tx.helo_name == "client.example.org");
    CHECK(handoff->tx.mail_line == "mail from: <j\xc3\xb6rg@example.org> SMTPUTF8 RET=HDRS ENVID=QQ314159");
    CHECK(handoff->tx.rcpt_line == "rcpt to:<postmaster@example.net>");
    CHECK(handoff->tx.replay_lines()[0] == "EHLO client.example.org\r\n");
}

TEST_CASE("HELO and EHLO are recorded as sent, the last one wins, and it resets the transaction") {
    SmtpDialog d(all_tests());
    CHECK(replies(d.feed("HELO first.example\r\n")) == "250 mx.example.net\r\n");
    d.feed("MAIL FROM:<a@example.org>\r\n");
    d.feed("EHLO second.example\r\n");
    CHECK(replies(d.feed("RCPT TO:<b@example.net>\r\n")) == "503 5.5.1 Error: need MAIL command\r\n");
    CHECK(replies(d.feed("HELO third.example\r\n")) == "250 mx.example.net\r\n");
    d.feed("MAIL FROM:<>\r\n");
    const auto events = d.feed("RCPT TO:<b@example.net>\r\n");
    const DialogEvent* handoff = find(events, Kind::Handoff);
    REQUIRE(handoff);
    CHECK(handoff->tx.helo_verb == "HELO");
    CHECK(handoff->tx.helo_name == "third.example");
    CHECK(handoff->tx.mail_from.empty());
    CHECK(handoff->tx.replay_lines()[0] == "HELO third.example\r\n");
}

TEST_CASE("the EHLO reply never offers PIPELINING, and STARTTLS only while TLS is available and not active") {
    SmtpDialog plain(all_tests());
    const std::string reply = replies(plain.feed("EHLO c.example\r\n"));
    for (const char* word : {"PIPELINING", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD", "CHUNKING", "VRFY"}) {
        CAPTURE(word);
        CHECK(reply.find(word) == std::string::npos);
    }
    DialogOptions o = all_tests();
    o.tls_available = true;
    SmtpDialog tls(o);
    CHECK(replies(tls.feed("EHLO c.example\r\n")) ==
          "250-mx.example.net\r\n250-STARTTLS\r\n250-SIZE\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n"
          "250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n");
}

TEST_CASE("syntax and sequence errors are answered and do not hand off") {
    SmtpDialog d(all_tests());
    CHECK(replies(d.feed("MAIL FROM:<a@example.org>\r\n")) == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    CHECK(replies(d.feed("EHLO\r\n")) == "501 Syntax: EHLO hostname\r\n");
    CHECK(replies(d.feed("HELO \r\n")) == "501 Syntax: HELO hostname\r\n");
    d.feed("EHLO c.example\r\n");
    CHECK(replies(d.feed("RCPT TO:<b@example.net>\r\n")) == "503 5.5.1 Error: need MAIL command\r\n");
    CHECK(replies(d.feed("DATA\r\n")) == "503 5.5.1 Error: need RCPT command\r\n");
    CHECK(replies(d.feed("MAIL <a@example.org>\r\n")) == "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    CHECK(replies(d.feed("MAIL FROM:a@example.org\r\n")) == "501 5.1.7 Bad sender address syntax\r\n");
    CHECK(replies(d.feed("MAIL FROM:<a@example.org>\r\n")) == "250 2.1.0 Ok\r\n");
    CHECK(replies(d.feed("MAIL FROM:<a@example.org>\r\n")) == "503 5.5.1 Error: nested MAIL command\r\n");
    CHECK(replies(d.feed("RCPT <b@example.net>\r\n")) == "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    CHECK(replies(d.feed("RCPT TO:<b@example.net>junk\r\n")) == "501 5.1.3 Bad recipient address syntax\r\n");
    CHECK(replies(d.feed("DATA now\r\n")) == "501 5.5.4 Syntax: DATA\r\n");
    CHECK(replies(d.feed("DATA\r\n")) == "554 5.5.1 Error: no valid recipients\r\n");
    CHECK(replies(d.feed("RSET x\r\n")) == "250 2.0.0 Ok\r\n");  // postscreen ignores RSET's arguments
    CHECK(replies(d.feed("RSET\r\n")) == "250 2.0.0 Ok\r\n");
    CHECK(replies(d.feed("RCPT TO:<b@example.net>\r\n")) == "503 5.5.1 Error: need MAIL command\r\n");
    CHECK(replies(d.feed("NOOP\r\n")) == "250 2.0.0 Ok\r\n");
    // Neither postscreen nor smtpd(8) knows HELP.
    CHECK(replies(d.feed("HELP\r\n")) == "502 5.5.2 Error: command not recognized\r\n");
    CHECK(replies(d.feed("XYZZY\r\n")) == "502 5.5.2 Error: command not recognized\r\n");
    CHECK_FALSE(d.finished());
    CHECK(d.passed());
}

TEST_CASE("VRFY, EXPN, AUTH, XCLIENT, XFORWARD, BDAT and ETRN are refused and never passed on") {
    // The enforce mode's replies too (one engine): AUTH as the other commands we do not
    // offer, ETRN as postscreen answers it.
    SmtpDialog d(all_tests());
    d.feed("EHLO c.example\r\n");
    d.feed("MAIL FROM:<a@example.org>\r\n");
    CHECK(replies(d.feed("VRFY root\r\n")) == "502 5.5.1 VRFY command is disabled\r\n");
    CHECK(replies(d.feed("VRFY\r\n")) == "501 5.5.4 Syntax: VRFY address\r\n");
    CHECK(replies(d.feed("EXPN staff\r\n")) == "502 5.5.1 EXPN command is disabled\r\n");
    CHECK(replies(d.feed("AUTH PLAIN AGZvbwBiYXI=\r\n")) == "502 5.5.1 Error: command not implemented\r\n");
    CHECK(replies(d.feed("XCLIENT ADDR=127.0.0.1\r\n")) == "502 5.5.1 Error: command not implemented\r\n");
    CHECK(replies(d.feed("XFORWARD ADDR=127.0.0.1\r\n")) == "502 5.5.1 Error: command not implemented\r\n");
    CHECK(replies(d.feed("BDAT 10 LAST\r\n")) == "502 5.5.1 Error: command not implemented\r\n");
    CHECK(replies(d.feed("ETRN example.org\r\n")) == "458 Unable to queue messages\r\n");
    // The transaction survives all that and still hands off with nothing of it in the replay.
    const auto events = d.feed("RCPT TO:<b@example.net>\r\n");
    const DialogEvent* handoff = find(events, Kind::Handoff);
    REQUIRE(handoff);
    CHECK(handoff->tx.mail_line == "MAIL FROM:<a@example.org>");
}

TEST_CASE("a command line over 512 octets gets 500 5.5.2 Line too long, however it arrives") {
    SmtpDialog d(all_tests());
    d.feed("EHLO c.example\r\n");
    // 510 octets of text + CRLF is the most RFC 5321 allows.
    const std::string fits = "NOOP " + std::string(505, 'x');
    CHECK(replies(d.feed(fits + "\r\n")) == "250 2.0.0 Ok\r\n");
    CHECK(replies(d.feed("NOOP " + std::string(506, 'x') + "\r\n")) == "500 5.5.2 Line too long\r\n");
    // 100 kB without a line end: held within the bound, answered once the line ends.
    const auto first = d.feed("MAIL FROM:<" + std::string(50000, 'a'));
    CHECK(replies(first).empty());
    CHECK(d.has_partial_line());
    CHECK(replies(d.feed(std::string(50000, 'a'))).empty());
    CHECK(replies(d.feed("@example.org>\r\n")) == "500 5.5.2 Line too long\r\n");
    CHECK_FALSE(d.has_partial_line());
    CHECK(replies(d.feed("MAIL FROM:<a@example.org>\r\n")) == "250 2.1.0 Ok\r\n");
}

TEST_CASE("QUIT is answered and closes") {
    SmtpDialog d(all_tests());
    const auto events = d.feed("QUIT\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::Close});
    CHECK(events[0].text == "221 2.0.0 mx.example.net Bye\r\n");
    CHECK(events[1].text == "quit");
    CHECK(d.finished());
    CHECK(d.feed("EHLO c.example\r\n").empty());
}

// ---------------------------------------------------------------- the tests

TEST_CASE("pipelining: a second command in the same read fails, after the first command's verb") {
    SmtpDialog d(all_tests());
    const auto events = d.feed("EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n");
    REQUIRE(find(events, Kind::Violation));
    CHECK(find(events, Kind::Violation)->test == Test::Pipelining);
    CHECK(texts(events, Kind::Violation) ==
          std::vector<std::string>{
              "COMMAND PIPELINING from [192.0.2.1]:5678 after EHLO: MAIL FROM:<a@example.org>\\r\\n"});
    CHECK(d.failed(Test::Pipelining));
    CHECK_FALSE(d.passed());
}

TEST_CASE("pipelining: a partial next line present when the reply is produced fails too") {
    SmtpDialog d(all_tests());
    const auto events = d.feed("EHLO c.example\r\nMAI");
    CHECK(texts(events, Kind::Violation) ==
          std::vector<std::string>{"COMMAND PIPELINING from [192.0.2.1]:5678 after EHLO: MAI"});
}

TEST_CASE("pipelining: commands in separate reads pass, however the bytes of one line are split") {
    SmtpDialog d(all_tests());
    for (const char* piece : {"EH", "LO c.exa", "mple\r", "\n", "MAIL FROM:<a@example.org>\r\n", "RCPT TO:<b@ex",
                              "ample.net>\r\n"}) {
        const auto events = d.feed(piece);
        CHECK_FALSE(find(events, Kind::Violation));
    }
    CHECK(d.finished());
    CHECK(d.passed());
}

TEST_CASE("pipelining behind the RCPT is a violation: PIPELINING was never offered") {
    SUBCASE("ignore: the client is still handed off, with the bytes, but earns no pass") {
        SmtpDialog d(all_tests(Action::Ignore));
        d.feed("EHLO c.example\r\n");
        d.feed("MAIL FROM:<a@example.org>\r\n");
        const auto events = d.feed("RCPT TO:<b@example.net>\r\nDATA\r\n");
        CHECK(kinds(events) == std::vector<Kind>{Kind::Violation, Kind::Handoff});
        CHECK(events[0].text == "COMMAND PIPELINING from [192.0.2.1]:5678 after RCPT: DATA\\r\\n");
        CHECK_FALSE(d.passed());
        CHECK(d.take_unprocessed() == "DATA\r\n");
    }
    SUBCASE("enforce: the RCPT is rejected instead of handed off") {
        SmtpDialog d(all_tests(Action::Enforce));
        d.feed("EHLO c.example\r\n");
        d.feed("MAIL FROM:<a@example.org>\r\n");
        const auto events = d.feed("RCPT TO:<b@example.net>\r\nDATA\r\n");
        CHECK_FALSE(find(events, Kind::Handoff));
        CHECK(replies(events) == "550 5.5.1 Protocol error\r\n554 5.5.1 Error: no valid recipients\r\n");
    }
}

TEST_CASE("with the pipelining test off, bytes behind the RCPT go to the backend untouched") {
    DialogOptions o = all_tests();
    o.pipelining = false;
    o.bare_newline = false;
    SmtpDialog d(o);
    d.feed("EHLO c.example\r\n");
    d.feed("MAIL FROM:<a@example.org>\r\n");
    const auto events = d.feed("RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\nDATA\r\nSubj");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Handoff});
    CHECK(d.passed());
    CHECK(d.take_unprocessed() == "RCPT TO:<c@example.net>\nDATA\r\nSubj");
    CHECK(d.take_unprocessed().empty());
}

TEST_CASE("non-SMTP: an HTTP request fails after CONNECT, a header line after the last command") {
    SUBCASE("forbidden verb first") {
        SmtpDialog d(all_tests(Action::Drop));
        const auto events = d.feed("GET / HTTP/1.0\r\n");
        CHECK(kinds(events) == std::vector<Kind>{Kind::Violation, Kind::Reply, Kind::Close});
        CHECK(events[0].test == Test::NonSmtp);
        CHECK(events[0].text == "NON-SMTP COMMAND from [192.0.2.1]:5678 after CONNECT: GET / HTTP/1.0");
        CHECK(events[1].text == "521 5.5.1 Protocol error\r\n");
        CHECK(events[2].text == "dropped");
    }
    SUBCASE("header after EHLO") {
        SmtpDialog d(all_tests(Action::Ignore));
        d.feed("EHLO c.example\r\n");
        const auto events = d.feed("User-Agent: curl/8.0\r\n");
        CHECK(texts(events, Kind::Violation) ==
              std::vector<std::string>{"NON-SMTP COMMAND from [192.0.2.1]:5678 after EHLO: User-Agent: curl/8.0"});
        CHECK(replies(events) == "502 5.5.2 Error: command not recognized\r\n");
    }
    SUBCASE("a line that does not start with a letter") {
        SmtpDialog d(all_tests(Action::Ignore));
        const auto events = d.feed("\r\n");
        CHECK(texts(events, Kind::Violation) ==
              std::vector<std::string>{"NON-SMTP COMMAND from [192.0.2.1]:5678 after CONNECT: "});
        CHECK(replies(events) == "502 5.5.2 Error: command not recognized\r\n");  // as postscreen
    }
}

TEST_CASE("bare newline: a line ending in LF alone fails, after the previous command") {
    SmtpDialog d(all_tests(Action::Ignore));
    auto events = d.feed("EHLO c.example\n");
    CHECK(texts(events, Kind::Violation) == std::vector<std::string>{"BARE NEWLINE from [192.0.2.1]:5678 after CONNECT"});
    CHECK(find(events, Kind::Violation)->test == Test::BareNewline);
    CHECK(replies(events) == kEhloReply);  // ignore: carried out all the same
    // Each test fails once per session; the next bare LF is not logged again.
    events = d.feed("MAIL FROM:<a@example.org>\n");
    CHECK_FALSE(find(events, Kind::Violation));
    CHECK(d.failed(Test::BareNewline));
}

TEST_CASE("a test that is off never fails") {
    DialogOptions o = all_tests();
    o.pipelining = o.non_smtp = o.bare_newline = false;
    SmtpDialog d(o);
    auto events = d.feed("GET / HTTP/1.0\nEHLO c.example\nMAIL FROM:<a@example.org>\r\n");
    CHECK_FALSE(find(events, Kind::Violation));
    CHECK(replies(events) == "502 5.5.2 Error: command not recognized\r\n" + kEhloReply + "250 2.1.0 Ok\r\n");
    events = d.feed("RCPT TO:<b@example.net>\r\n");
    CHECK(find(events, Kind::Handoff));
    CHECK(d.passed());
}

TEST_CASE("several tests can fail on one line; each is reported") {
    SmtpDialog d(all_tests(Action::Ignore));
    const auto events = d.feed("GET / HTTP/1.0\nHost: x\n");
    CHECK(texts(events, Kind::Violation) ==
          std::vector<std::string>{"BARE NEWLINE from [192.0.2.1]:5678 after CONNECT",
                                   "NON-SMTP COMMAND from [192.0.2.1]:5678 after CONNECT: GET / HTTP/1.0",
                                   "COMMAND PIPELINING from [192.0.2.1]:5678 after GET: Host: x\\n"});
    CHECK(d.failed(Test::BareNewline));
    CHECK(d.failed(Test::NonSmtp));
    CHECK(d.failed(Test::Pipelining));
}

// ---------------------------------------------------------------- actions

TEST_CASE("enforce: the client keeps talking, every RCPT gets 550 5.5.1 and the NOQUEUE line") {
    SmtpDialog d(all_tests(Action::Enforce));
    d.feed("EHLO c.example\r\n");
    d.feed("MAIL FROM:<a@example.org> SIZE=10\r\n");
    // The bare LF fails the test on the RCPT line itself; the engine already knows the
    // client's helo and sender, so the reject names them.
    auto events = d.feed("RCPT TO:<b@example.net>\n");
    CHECK(d.enforcing());
    CHECK_FALSE(find(events, Kind::Handoff));
    CHECK(kinds(events) == std::vector<Kind>{Kind::Violation, Kind::Log, Kind::Reply});
    CHECK(events[1].text ==
          "NOQUEUE: reject: RCPT from [192.0.2.1]:5678: 550 5.5.1 Protocol error; from=<a@example.org>, "
          "to=<b@example.net>, proto=ESMTP, helo=<c.example>");
    CHECK(events[2].text == "550 5.5.1 Protocol error\r\n");
    events = d.feed("RCPT TO:<c@example.net>\r\n");
    CHECK(replies(events) == "550 5.5.1 Protocol error\r\n");
    CHECK(texts(events, Kind::Log).size() == 1);
    CHECK(replies(d.feed("DATA\r\n")) == "554 5.5.1 Error: no valid recipients\r\n");
    events = d.feed("QUIT\r\n");
    CHECK(replies(events) == "221 2.0.0 mx.example.net Bye\r\n");
    CHECK(texts(events, Kind::Close) == std::vector<std::string>{"rejected"});
}

TEST_CASE("enforce before MAIL: the rest of the dialog goes on and never hands off") {
    SmtpDialog d(all_tests(Action::Enforce));
    auto events = d.feed("HELO c.example\r\nMAIL FROM:<a@example.org>\r\n");
    CHECK(find(events, Kind::Violation));
    CHECK(replies(events) == "250 mx.example.net\r\n250 2.1.0 Ok\r\n");
    events = d.feed("RCPT TO:<b@example.net>\r\n");
    CHECK(replies(events) == "550 5.5.1 Protocol error\r\n");
    REQUIRE(texts(events, Kind::Log).size() == 1);
    CHECK(texts(events, Kind::Log)[0].find("proto=SMTP, helo=<c.example>") != std::string::npos);
    CHECK_FALSE(d.finished());
}

TEST_CASE("ignore: the violation is reported and the client is still handed off without a pass") {
    SmtpDialog d(all_tests(Action::Ignore));
    auto events = d.feed("EHLO c.example\n");
    CHECK(find(events, Kind::Violation));
    d.feed("MAIL FROM:<a@example.org>\r\n");
    events = d.feed("RCPT TO:<b@example.net>\r\n");
    CHECK(find(events, Kind::Handoff));
    CHECK_FALSE(d.passed());
    CHECK_FALSE(d.enforcing());
}

TEST_CASE("drop: 521 5.5.1 Protocol error and close, nothing more is read") {
    SmtpDialog d(all_tests(Action::Drop));
    d.feed("EHLO c.example\r\n");
    const auto events = d.feed("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Violation, Kind::Reply, Kind::Close});
    CHECK(events[0].text.rfind("COMMAND PIPELINING from [192.0.2.1]:5678 after MAIL: RCPT TO:", 0) == 0);
    CHECK(events[1].text == "521 5.5.1 Protocol error\r\n");
    CHECK(events[2].text == "dropped");
    CHECK(d.finished());
    CHECK(d.feed("RCPT TO:<b@example.net>\r\n").empty());
}

// ---------------------------------------------------------------- limits

TEST_CASE("command_count_limit: the command beyond it gets 421 4.7.0 and the session closes") {
    DialogOptions o = all_tests();
    o.command_count_limit = 3;
    SmtpDialog d(o);
    CHECK(replies(d.feed("EHLO c.example\r\n")) == kEhloReply);
    CHECK(replies(d.feed("NOOP\r\n")) == "250 2.0.0 Ok\r\n");
    CHECK(replies(d.feed("NOOP\r\n")) == "250 2.0.0 Ok\r\n");
    CHECK(d.command_count() == 3);
    const auto events = d.feed("NOOP\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Log, Kind::Reply, Kind::Close});
    CHECK(events[0].text == "COMMAND COUNT LIMIT from [192.0.2.1]:5678");
    CHECK(events[1].text == "421 4.7.0 mx.example.net Error: too many commands\r\n");
    CHECK(events[2].text == "rejected");
    CHECK(d.finished());
}

TEST_CASE("command_count_limit: QUIT is always answered, and the RCPT counts") {
    DialogOptions o = all_tests();
    o.command_count_limit = 2;
    SUBCASE("QUIT") {
        SmtpDialog d(o);
        d.feed("NOOP\r\n");
        d.feed("NOOP\r\n");
        CHECK(replies(d.feed("QUIT\r\n")) == "221 2.0.0 mx.example.net Bye\r\n");
    }
    SUBCASE("RCPT beyond the limit is not handed off") {
        SmtpDialog d(o);
        d.feed("EHLO c.example\r\n");
        d.feed("MAIL FROM:<a@example.org>\r\n");
        const auto events = d.feed("RCPT TO:<b@example.net>\r\n");
        CHECK_FALSE(find(events, Kind::Handoff));
        CHECK(replies(events) == "421 4.7.0 mx.example.net Error: too many commands\r\n");
    }
}

TEST_CASE("command time limit: LineStarted marks a line's first bytes; the timeout answers 421 4.4.2") {
    SmtpDialog d(all_tests());
    auto events = d.feed("EH");
    CHECK(kinds(events) == std::vector<Kind>{Kind::LineStarted});
    CHECK(d.has_partial_line());
    CHECK(d.feed("LO c.exa").empty());  // a slow drip does not restart the clock
    events = d.feed("mple\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply});
    CHECK_FALSE(d.has_partial_line());
    // A line's end and the next line's start in the same read (the pipelining test off).
    DialogOptions o = all_tests();
    o.pipelining = false;
    SmtpDialog p(o);
    events = p.feed("EHLO c.example\r\nMA");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::LineStarted});

    events = d.time_limit_exceeded();
    CHECK(kinds(events) == std::vector<Kind>{Kind::Log, Kind::Reply, Kind::Close});
    CHECK(events[0].text == "COMMAND TIME LIMIT from [192.0.2.1]:5678");
    CHECK(events[1].text == "421 4.4.2 mx.example.net Error: timeout exceeded\r\n");
    CHECK(events[2].text == "timeout");
    CHECK(d.finished());
}

// ---------------------------------------------------------------- STARTTLS

TEST_CASE("STARTTLS: 220, handshake, then the client starts over and the replay records the TLS EHLO") {
    DialogOptions o = all_tests();
    o.tls_available = true;
    SmtpDialog d(o);
    d.feed("EHLO before-tls.example\r\n");
    auto events = d.feed("STARTTLS\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::StartTls});
    CHECK(events[0].text == "220 2.0.0 Ready to start TLS\r\n");
    // Nothing is read between our 220 and the end of the handshake.
    CHECK(d.feed("MAIL FROM:<evil@example.org>\r\n").empty());
    d.tls_established();
    // RFC 3207 §4.2: the pre-TLS EHLO is forgotten.
    CHECK(replies(d.feed("MAIL FROM:<a@example.org>\r\n")) == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    CHECK(replies(d.feed("EHLO after-tls.example\r\n")) == kEhloReply);  // no STARTTLS any more
    CHECK(replies(d.feed("STARTTLS\r\n")) == "554 5.5.1 Error: TLS already active\r\n");
    d.feed("MAIL FROM:<a@example.org> BODY=8BITMIME\r\n");
    events = d.feed("RCPT TO:<b@example.net>\r\n");
    const DialogEvent* handoff = find(events, Kind::Handoff);
    REQUIRE(handoff);
    CHECK(handoff->tx.tls);
    CHECK(handoff->tx.helo_name == "after-tls.example");
    CHECK(handoff->tx.mail_line == "MAIL FROM:<a@example.org> BODY=8BITMIME");
    CHECK(d.passed());
}

TEST_CASE("STARTTLS: bytes pipelined behind it are discarded (CVE-2011-0411)") {
    DialogOptions o = all_tests();
    o.tls_available = true;
    o.pipelining = false;
    SmtpDialog d(o);
    d.feed("EHLO c.example\r\n");
    const auto events = d.feed("STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::StartTls});
    CHECK_FALSE(d.has_partial_line());
    d.tls_established();
    CHECK(replies(d.feed("EHLO c.example\r\n")) == kEhloReply);
    CHECK(replies(d.feed("RCPT TO:<b@example.net>\r\n")) == "503 5.5.1 Error: need MAIL command\r\n");
}

TEST_CASE("STARTTLS: refused inside a mail transaction, which goes on (RFC 3207 §4.2, docs/design.md \"TLS\")") {
    DialogOptions o = all_tests();
    o.tls_available = true;
    SmtpDialog d(o);
    d.feed("EHLO c.example\r\n");
    d.feed("MAIL FROM:<a@example.org>\r\n");
    auto events = d.feed("STARTTLS\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply});
    CHECK(events[0].text == "503 5.5.1 Error: MAIL transaction in progress\r\n");
    // A syntax error is still a syntax error first, as in smtpd.
    CHECK(replies(d.feed("STARTTLS now\r\n")) == "501 5.5.4 Syntax: STARTTLS\r\n");
    // The transaction goes on in clear, and the handoff replays it.
    events = d.feed("RCPT TO:<b@example.net>\r\n");
    const DialogEvent* handoff = find(events, Kind::Handoff);
    REQUIRE(handoff);
    CHECK_FALSE(handoff->tx.tls);
    CHECK(handoff->tx.mail_line == "MAIL FROM:<a@example.org>");
    CHECK(d.passed());   // not a protocol error: no test fails for it

    SUBCASE("RSET or a new EHLO ends the transaction: STARTTLS is taken again") {
        for (const char* end : {"RSET\r\n", "EHLO again.example\r\n", "HELO again.example\r\n"}) {
            INFO("ended by ", end);
            SmtpDialog t(o);
            t.feed("EHLO c.example\r\n");
            t.feed("MAIL FROM:<a@example.org>\r\n");
            t.feed(end);
            CHECK(kinds(t.feed("STARTTLS\r\n")) == std::vector<Kind>{Kind::Reply, Kind::StartTls});
        }
    }
}

TEST_CASE("STARTTLS: refused without a certificate and with an argument") {
    SmtpDialog d(all_tests());
    CHECK(replies(d.feed("STARTTLS\r\n")) == "502 5.5.1 Error: command not implemented\r\n");
    DialogOptions o = all_tests();
    o.tls_available = true;
    SmtpDialog t(o);
    CHECK(replies(t.feed("STARTTLS now\r\n")) == "501 5.5.4 Syntax: STARTTLS\r\n");
}

TEST_CASE("deep_options takes the deep and limits keys from the configuration") {
    Config c;
    c.deep_pipelining = true;
    c.deep_bare_newline = true;
    c.deep_action = Action::Drop;
    c.deep_forbidden_commands = {"FOO"};
    c.command_count_limit = 7;
    c.hostname = "mx.example.net";
    const DialogOptions o = deep_options(c, {"SIZE 1000", "8BITMIME"}, kClient, true);
    CHECK(o.mode == DialogMode::Deep);
    CHECK(o.pipelining);
    CHECK_FALSE(o.non_smtp);
    CHECK(o.bare_newline);
    CHECK(o.action == Action::Drop);
    CHECK(o.forbidden == std::vector<std::string>{"FOO"});
    CHECK(o.command_count_limit == 7);
    CHECK(o.hostname == "mx.example.net");
    CHECK(o.ehlo_keywords == std::vector<std::string>{"SIZE 1000", "8BITMIME"});
    CHECK(o.client == kClient);
    CHECK(o.tls_available);
}

TEST_CASE("pipelining: a line kept for want of reply room is answered later, and the pipelined client is never handed off") {
    SmtpDialog d(all_tests());
    // The EHLO reply fills a room of 1 octet: the RCPT waits for the next feed, and is
    // still pipelined (it came in the same read as the EHLO), so it never hands off.
    auto events = d.feed("EHLO c.example\r\nRCPT TO:<b@example.org>\r\n", 1);
    CHECK(d.has_unhandled_lines());
    CHECK(texts(events, Kind::Reply).size() == 1);
    events = d.feed({});
    CHECK_FALSE(find(events, Kind::Handoff));
    CHECK(d.failed(Test::Pipelining));
    CHECK(texts(events, Kind::Reply) == std::vector<std::string>{"503 5.5.1 Error: need MAIL command\r\n"});
    CHECK_FALSE(d.has_unhandled_lines());
}

TEST_CASE("STARTTLS: no handshake slot free (tls.max_pending_handshakes): 454, the dialog goes on in clear") {
    DialogOptions o = all_tests();
    o.tls_available = true;
    bool free_slot = false;
    o.take_tls_slot = [&] { return free_slot; };
    SmtpDialog d(o);
    d.feed("EHLO c.example\r\n");
    auto events = d.feed("STARTTLS\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply});
    CHECK(events[0].text == "454 4.7.0 TLS not available due to temporary reason\r\n");
    // Still in clear, the transaction goes on and is handed off without TLS.
    d.feed("MAIL FROM:<a@example.org>\r\n");
    events = d.feed("RCPT TO:<b@example.net>\r\n");
    const DialogEvent* handoff = find(events, Kind::Handoff);
    REQUIRE(handoff);
    CHECK_FALSE(handoff->tx.tls);

    free_slot = true;
    SmtpDialog again(o);
    again.feed("EHLO c.example\r\n");
    CHECK(kinds(again.feed("STARTTLS\r\n")) == std::vector<Kind>{Kind::Reply, Kind::StartTls});
}
