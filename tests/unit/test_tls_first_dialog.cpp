#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "screen/smtp_dialog.h"
#include "dialog_events.h"

// The dialog in TlsFirst mode (docs/design.md, "TLS"): a client handed off at once is
// answered up to its handshake, then handed off at its first command that needs the
// backend, that command left unanswered and first in what goes to the backend.

using namespace smtpscreen;
using Kind = DialogEvent::Kind;
using test::kinds;
using test::replies;

namespace {

const std::string kClient = "[192.0.2.1]:5678";
const std::string kEhloReply = "250-mx.example.net\r\n250-STARTTLS\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n";

DialogOptions tls_first() {
    Config c;
    c.hostname = "mx.example.net";
    c.command_count_limit = 20;
    return tls_first_options(c, {"PIPELINING", "SIZE 10240000"}, kClient);
}

}  // namespace

TEST_CASE("tls_first_options: STARTTLS offered, no deep test, the keywords given") {
    const DialogOptions o = tls_first();
    CHECK(o.mode == DialogMode::TlsFirst);
    CHECK(o.tls_available);
    CHECK_FALSE(o.pipelining);
    CHECK_FALSE(o.non_smtp);
    CHECK_FALSE(o.bare_newline);
    CHECK(o.forbidden.empty());
    CHECK(o.command_count_limit == 20);
    CHECK(o.ehlo_keywords == std::vector<std::string>{"PIPELINING", "SIZE 10240000"});
}

TEST_CASE("TlsFirst: EHLO offers STARTTLS; after the handshake the first command hands off unanswered") {
    SmtpDialog d(tls_first());
    CHECK(replies(d.feed("EHLO client.example.org\r\n")) == kEhloReply);
    auto events = d.feed("STARTTLS\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::StartTls});
    CHECK(events[0].text == "220 2.0.0 Ready to start TLS\r\n");
    d.tls_established();
    events = d.feed("EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n");
    REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});
    // RFC 3207 §4.2: the EHLO from before TLS is forgotten, nothing to replay.
    CHECK(events[0].tx.helo_verb.empty());
    CHECK(events[0].tx.tls);
    CHECK(d.finished());
    // The command that needs the backend comes first, raw, with what was pipelined behind it.
    CHECK(d.take_unprocessed() == "EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n");
}

TEST_CASE("TlsFirst: QUIT after the handshake is answered here, with no handoff") {
    SmtpDialog d(tls_first());
    d.feed("EHLO c.example\r\n");
    d.feed("STARTTLS\r\n");
    d.tls_established();
    const auto events = d.feed("QUIT\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::Close});
    CHECK(events[0].text == "221 2.0.0 mx.example.net Bye\r\n");
    CHECK(events[1].text == "quit");
}

TEST_CASE("TlsFirst: NOOP, RSET and HELO are answered here; after the handshake even NOOP hands off") {
    SmtpDialog d(tls_first());
    CHECK(replies(d.feed("NOOP\r\n")) == "250 2.0.0 Ok\r\n");
    CHECK(replies(d.feed("RSET\r\n")) == "250 2.0.0 Ok\r\n");
    CHECK(replies(d.feed("HELO c.example\r\n")) == "250 mx.example.net\r\n");
    d.feed("STARTTLS\r\n");
    d.tls_established();
    const auto events = d.feed("NOOP\r\n");
    REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});
    CHECK(d.take_unprocessed() == "NOOP\r\n");
}

TEST_CASE("TlsFirst: a command in clear that needs the backend hands off with the EHLO to replay, pipelining kept") {
    SmtpDialog d(tls_first());
    d.feed("EHLO client.example.org other words\r\n");
    const auto events =
        d.feed("MAIL FROM:<a@example.org> SIZE=10\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: x\r\n");
    REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});
    const SmtpTransaction& tx = events[0].tx;
    CHECK(tx.helo_verb == "EHLO");
    CHECK(tx.helo_name == "client.example.org");
    CHECK_FALSE(tx.tls);
    CHECK(d.take_unprocessed() == "MAIL FROM:<a@example.org> SIZE=10\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: x\r\n");
    // Fed after the handoff (the session has stopped reading): kept for the backend.
    CHECK(d.feed("more\r\n").empty());
    CHECK(d.take_unprocessed() == "more\r\n");
}

TEST_CASE("TlsFirst: a command before any HELO hands off with nothing to replay; verbs we refuse elsewhere go to the backend") {
    for (const char* line : {"MAIL FROM:<a@example.org>\r\n", "AUTH PLAIN\r\n", "VRFY root\r\n", "HELP\r\n",
                             "XCLIENT ADDR=1.2.3.4\r\n"}) {
        SmtpDialog d(tls_first());
        const auto events = d.feed(line);
        REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});
        CHECK(events[0].tx.helo_verb.empty());
        // The relay filter refuses XCLIENT, XFORWARD and BDAT as for any client (docs/design.md, "Hostile input").
        CHECK(d.take_unprocessed() == line);
    }
}

TEST_CASE("TlsFirst: bytes pipelined behind STARTTLS are discarded (CVE-2011-0411)") {
    SmtpDialog d(tls_first());
    d.feed("EHLO c.example\r\n");
    const auto events = d.feed("STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Reply, Kind::StartTls});
    d.tls_established();
    REQUIRE(kinds(d.feed("EHLO c.example\r\n")) == std::vector<Kind>{Kind::Handoff});
    CHECK(d.take_unprocessed() == "EHLO c.example\r\n");
}

TEST_CASE("TlsFirst: a bare LF line and a split line hand off raw, as the client sent them") {
    SmtpDialog d(tls_first());
    CHECK(d.feed("EHLO c.example\n").size() == 1);
    CHECK(d.feed("MAIL FROM:<a@exa").empty() == false);  // LineStarted
    const auto events = d.feed("mple.org>\n");
    REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});
    CHECK(d.take_unprocessed() == "MAIL FROM:<a@example.org>\n");
}

TEST_CASE("TlsFirst: STARTTLS with no handshake slot free gets 454 and the client may go on in clear") {
    DialogOptions o = tls_first();
    o.take_tls_slot = [] { return false; };
    SmtpDialog d(o);
    d.feed("EHLO c.example\r\n");
    CHECK(replies(d.feed("STARTTLS\r\n")) == "454 4.7.0 TLS not available due to temporary reason\r\n");
    const auto events = d.feed("MAIL FROM:<a@example.org>\r\n");
    REQUIRE(kinds(events) == std::vector<Kind>{Kind::Handoff});
    CHECK(events[0].tx.helo_name == "c.example");
}

TEST_CASE("TlsFirst: limits.command_count_limit holds as in every mode") {
    DialogOptions o = tls_first();
    o.command_count_limit = 2;
    SmtpDialog d(o);
    d.feed("NOOP\r\n");
    d.feed("NOOP\r\n");
    const auto events = d.feed("NOOP\r\n");
    CHECK(kinds(events) == std::vector<Kind>{Kind::Log, Kind::Reply, Kind::Close});
}
