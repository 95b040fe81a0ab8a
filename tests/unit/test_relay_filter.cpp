#include <doctest/doctest.h>

#include <ctime>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/relay_filter.h"

using namespace smtpscreen;

namespace {

constexpr std::string_view kBlocked = "XSMTPSCREEN-BLOCKED\r\n";

// Drives a filter and collects what it sends each way.
struct Relay {
    explicit Relay(RelayFilter::Options options = {}) : filter(options) {}

    // Client bytes in one call; returns what this call forwarded to the backend, and
    // collects what the filter answered the client itself in `replies`.
    std::string client(std::string_view bytes) {
        std::string out;
        filter.from_client(bytes, out, replies);
        return out;
    }
    // Client bytes one octet per call.
    std::string client_drip(std::string_view bytes) {
        std::string out;
        for (char c : bytes) filter.from_client(std::string_view(&c, 1), out, replies);
        return out;
    }
    // Client bytes in pieces of `piece` octets.
    std::string client_pieces(std::string_view bytes, size_t piece) {
        std::string out;
        for (size_t at = 0; at < bytes.size(); at += piece) filter.from_client(bytes.substr(at, piece), out, replies);
        return out;
    }
    // Backend bytes in one call; returns what went to the client, and collects the
    // client bytes the reply released in `released`.
    std::string backend(std::string_view bytes) {
        std::string out;
        filter.from_backend(bytes, out, released);
        return out;
    }
    std::string backend_drip(std::string_view bytes) {
        std::string out;
        for (char c : bytes) filter.from_backend(std::string_view(&c, 1), out, released);
        return out;
    }
    std::string take_released() { return std::exchange(released, {}); }
    std::string take_replies() { return std::exchange(replies, {}); }
    // The session's handshake is done; returns what went to the backend (the RSET).
    std::string tls_established() {
        std::string out;
        filter.tls_established(replies, out);
        return out;
    }

    RelayFilter filter;
    std::string released;
    std::string replies;
};

RelayFilter::Options strip_tls() {
    RelayFilter::Options options;
    options.strip_starttls = true;
    return options;
}

RelayFilter::Options short_lines() {
    RelayFilter::Options options;
    options.max_line = 64;
    options.max_command_line = 64;
    return options;
}

constexpr std::string_view kLineTooLong = "500 5.5.2 Line too long\r\n";

const std::string kEhloReply =
    "250-mx.example.org\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-XCLIENT NAME ADDR PROTO HELO\r\n"
    "250-STARTTLS\r\n"
    "250-XFORWARD NAME ADDR PROTO HELO SOURCE\r\n"
    "250-CHUNKING\r\n"
    "250 8BITMIME\r\n";
const std::string kEhloStripped =
    "250-mx.example.org\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-STARTTLS\r\n"
    "250 8BITMIME\r\n";

// Puts the relay into the data phase of a transaction.
void enter_data(Relay& relay) {
    REQUIRE(relay.client("DATA\r\n") == "DATA\r\n");
    REQUIRE(relay.filter.client_held());
    REQUIRE(relay.backend("354 go ahead\r\n") == "354 go ahead\r\n");
    REQUIRE_FALSE(relay.filter.client_held());
}

}  // namespace

TEST_CASE("relay rewrites XCLIENT, XFORWARD, BDAT and PROXY whatever their case") {
    const std::vector<std::string> lines = {
        "XCLIENT ADDR=127.0.0.1\r\n",
        "xclient addr=127.0.0.1\r\n",
        "XcLiEnT NAME=localhost ADDR=127.0.0.1\r\n",
        "XCLIENT\r\n",
        "XCLIENT ADDR=127.0.0.1\n",          // bare LF ends a command line for Postfix too
        "  XCLIENT ADDR=127.0.0.1\r\n",      // Postfix's tokenizer skips leading white space
        "\tXCLIENT\tADDR=127.0.0.1\r\n",
        "XCLIENT:ADDR=127.0.0.1\r\n",
        "XFORWARD ADDR=127.0.0.1\r\n",
        "xforward name=spoofed\r\n",
        "BDAT 100 LAST\r\n",
        "bdat 0\r\n",
        "PROXY TCP4 127.0.0.1 127.0.0.1 25 25\r\n",
        "proxy TCP4 127.0.0.1 127.0.0.1 25 25\r\n",
    };
    for (const auto& line : lines) {
        INFO("line: ", line);
        Relay relay;
        CHECK(relay.client(line) == kBlocked);
        Relay dripped;
        CHECK(dripped.client_drip(line) == kBlocked);
    }
}

// Postfix reads the first 2,048 octets of a command line, Exim 16,384: a verb after the
// first and an argument after the first are read differently by the two
// (CommandPairing::kMaxVerbStart, kMaxModeLine).
TEST_CASE("relay blocks a line whose verb or DATA/STARTTLS argument lies where backends read it differently") {
    const std::string blanks(3000, ' ');
    const std::vector<std::string> lines = {
        blanks + "DATA\r\n",                             // an empty command to Postfix, DATA to Exim
        std::string(40, '\t') + "NOOP\r\n",
        std::string(33, ' ') + "\r\n",
        "DATA" + blanks + "x\r\n",                       // DATA to Postfix, DATA with an argument to Exim
        "STARTTLS" + std::string(600, ' ') + "\r\n",
    };
    for (const auto& line : lines) {
        INFO("line of ", line.size(), " octets");
        Relay relay;
        CHECK(relay.client(line) == kBlocked);
        Relay dripped;
        CHECK(dripped.client_drip(line) == kBlocked);
    }
    // Up to the limits a line goes through as it came.
    for (const std::string line : {std::string(32, ' ') + "NOOP\r\n", "DATA" + std::string(500, ' ') + "\r\n",
                                   "NOOP" + blanks + "x\r\n"}) {
        INFO("line of ", line.size(), " octets");
        Relay relay;
        CHECK(relay.client(line) == line);
    }
}

TEST_CASE("relay forwards every other command byte for byte, line endings included") {
    const std::string session =
        "EHLO client.example\r\n"
        "MAIL FROM:<a@example.org> SIZE=100\r\n"
        "RCPT TO:<b@example.net>\n"
        "NOOP\r\n"
        "XCLIENTS are not XCLIENT\r\n"
        "X-CLIENT foo\r\n"
        "HELP XCLIENT\r\n"
        "VRFY proxy\r\n"
        "\r\n"
        "RSET\r\n";
    Relay relay;
    CHECK(relay.client(session) == session);
    Relay dripped;
    CHECK(dripped.client_drip(session) == session);
    CHECK(dripped.filter.held_bytes() == 0);
}

TEST_CASE("relay rewrites XCLIENT inside a pipelined burst and keeps the reply order") {
    Relay relay;
    CHECK(relay.client("MAIL FROM:<a@example.org>\r\nXCLIENT ADDR=127.0.0.1\r\nRCPT TO:<b@example.net>\r\n"
                       "xforward ADDR=127.0.0.1\r\nNOOP\r\n") ==
          "MAIL FROM:<a@example.org>\r\nXSMTPSCREEN-BLOCKED\r\nRCPT TO:<b@example.net>\r\n"
          "XSMTPSCREEN-BLOCKED\r\nNOOP\r\n");
    // RFC 2920: one reply per command, in order; all pass through unchanged.
    const std::string replies =
        "250 2.1.0 Ok\r\n502 5.5.2 Error: command not recognized\r\n250 2.1.5 Ok\r\n"
        "502 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n";
    CHECK(relay.backend(replies) == replies);
    // Every reply was counted: the next EHLO's reply is the one filtered.
    relay.client("EHLO again\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
}

TEST_CASE("relay strips XCLIENT, XFORWARD and CHUNKING from the EHLO reply") {
    Relay relay;
    CHECK(relay.client("EHLO client.example\r\n") == "EHLO client.example\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
}

TEST_CASE("relay makes the last kept EHLO line final when the final line is stripped") {
    const std::string reply =
        "250-mx.example.org\r\n"
        "250-PIPELINING\r\n"
        "250-8BITMIME\r\n"
        "250-XFORWARD NAME ADDR\r\n"
        "250 CHUNKING\r\n";
    const std::string expected =
        "250-mx.example.org\r\n"
        "250-PIPELINING\r\n"
        "250 8BITMIME\r\n";
    Relay relay;
    relay.client("ehlo client.example\r\n");
    CHECK(relay.backend(reply) == expected);

    SUBCASE("a reply of the greeting line and stripped lines only") {
        relay.client("EHLO again\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250 XCLIENT NAME ADDR\r\n") == "250 mx.example.org\r\n");
    }
}

TEST_CASE("relay strips the EHLO reply the same however the backend's bytes are split") {
    const std::string reply = kEhloReply + "250 2.0.0 Ok\r\n";   // EHLO reply, then a NOOP reply
    const std::string expected = kEhloStripped + "250 2.0.0 Ok\r\n";

    Relay dripped;
    dripped.client("EHLO client.example\r\nNOOP\r\n");
    CHECK(dripped.backend_drip(reply) == expected);

    for (size_t cut = 1; cut < reply.size(); ++cut) {
        for (size_t cut2 = cut; cut2 < reply.size(); cut2 += 7) {
            INFO("cuts at ", cut, " and ", cut2);
            Relay relay;
            relay.client("EHLO client.example\r\nNOOP\r\n");
            std::string out = relay.backend(reply.substr(0, cut));
            out += relay.backend(reply.substr(cut, cut2 - cut));
            out += relay.backend(reply.substr(cut2));
            CHECK(out == expected);
        }
    }
}

TEST_CASE("relay filters only the reply that answers EHLO") {
    Relay relay;
    relay.client("NOOP\r\nHELO client.example\r\nEHLO client.example\r\nHELP\r\n");
    const std::string not_ehlo = "250-first\r\n250-CHUNKING\r\n250 XCLIENT\r\n";
    CHECK(relay.backend(not_ehlo) == not_ehlo);                            // NOOP
    CHECK(relay.backend("250 mx.example.org\r\n") == "250 mx.example.org\r\n");  // HELO
    CHECK(relay.backend(kEhloReply) == kEhloStripped);                     // EHLO
    CHECK(relay.backend(not_ehlo) == not_ehlo);                            // HELP
}

TEST_CASE("relay never strips the first EHLO line: it is the server's name") {
    Relay relay;
    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend("250-xclient.example.org\r\n250 CHUNKING\r\n") == "250 xclient.example.org\r\n");
}

TEST_CASE("relay passes a refused EHLO reply unchanged") {
    Relay relay;
    relay.client("EHLO client.example\r\n");
    const std::string refused = "554-XCLIENT\r\n554 CHUNKING is not for you\r\n";
    CHECK(relay.backend(refused) == refused);
}

TEST_CASE("relay strips STARTTLS from the EHLO reply and blocks the client's only when told to") {
    SUBCASE("strip_starttls") {
        Relay relay(strip_tls());
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend(kEhloReply) ==
              "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n");
        CHECK(relay.client("STARTTLS\r\n") == kBlocked);
        CHECK_FALSE(relay.filter.client_held());
        CHECK(relay.backend("502 5.5.2 Error: command not recognized\r\n") ==
              "502 5.5.2 Error: command not recognized\r\n");
        CHECK_FALSE(relay.filter.transparent());
        CHECK(relay.client("XCLIENT ADDR=127.0.0.1\r\n") == kBlocked);
    }
    SUBCASE("STARTTLS kept") {
        Relay relay;
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250 STARTTLS\r\n") == "250-mx.example.org\r\n250 STARTTLS\r\n");
        CHECK(relay.client("starttls\r\n") == "starttls\r\n");
        CHECK(relay.filter.client_held());
    }
}

TEST_CASE("relay turns transparent after the backend accepts STARTTLS and drops what was pipelined behind it") {
    Relay relay;
    CHECK(relay.client("STARTTLS\r\nXCLIENT ADDR=127.0.0.1\r\nEHLO injected\r\n") == "STARTTLS\r\n");
    CHECK(relay.filter.client_held());
    CHECK(relay.filter.held_bytes() > 0);
    CHECK(relay.backend("220 2.0.0 Ready to start TLS\r\n") == "220 2.0.0 Ready to start TLS\r\n");
    CHECK(relay.filter.transparent());
    CHECK_FALSE(relay.filter.client_held());
    // CVE-2011-0411: the plain-text bytes sent before the handshake are not released.
    CHECK(relay.take_released().empty());
    CHECK(relay.filter.held_bytes() == 0);

    // Encrypted records go through untouched, whatever they happen to contain.
    const std::string record("\x16\x03\x01\x00\x20XCLIENT ADDR=1\r\n\x00\xff", 24);
    CHECK(relay.client(record) == record);
    CHECK(relay.backend(record) == record);
    CHECK(relay.backend(kEhloReply) == kEhloReply);
}

TEST_CASE("relay treats bytes after a refused STARTTLS as commands again") {
    Relay relay;
    CHECK(relay.client("STARTTLS\r\nXCLIENT ADDR=127.0.0.1\r\nNOOP\r\n") == "STARTTLS\r\n");
    CHECK(relay.backend("454 4.7.0 TLS not available\r\n") == "454 4.7.0 TLS not available\r\n");
    CHECK_FALSE(relay.filter.transparent());
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.take_released() == std::string(kBlocked) + "NOOP\r\n");
}

TEST_CASE("relay holds the client after DATA until the backend answers 354, then relays content untouched") {
    Relay relay;
    const std::string burst =
        "MAIL FROM:<a@example.org>\r\n"
        "RCPT TO:<b@example.net>\r\n"
        "DATA\r\n";
    const std::string content =
        "Subject: test\r\n"
        "\r\n"
        "XCLIENT ADDR=127.0.0.1\r\n"
        "BDAT 10\r\n"
        "..leading dot\r\n"
        ".\r\n";
    CHECK(relay.client(burst + content + "QUIT\r\n") == burst);
    CHECK(relay.filter.client_held());
    CHECK(relay.filter.held_bytes() == content.size() + 6);

    // Replies to MAIL and RCPT (one multi-line) do not release anything.
    CHECK(relay.backend("250 2.1.0 Ok\r\n250-2.1.5 Ok\r\n250 2.1.5 still Ok\r\n") ==
          "250 2.1.0 Ok\r\n250-2.1.5 Ok\r\n250 2.1.5 still Ok\r\n");
    CHECK(relay.filter.client_held());
    CHECK(relay.take_released().empty());

    // The 354 arrives byte by byte: the release comes with the end of its line.
    CHECK(relay.backend_drip("354 End data with <CR><LF>.<CR><LF>\r") == "354 End data with <CR><LF>.<CR><LF>\r");
    CHECK(relay.filter.client_held());
    CHECK(relay.backend("\n") == "\n");
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.take_released() == content + "QUIT\r\n");   // content byte-exact, QUIT a command
    CHECK(relay.filter.held_bytes() == 0);

    // The end-of-data reply and QUIT's reply are both counted: the next EHLO is filtered.
    CHECK(relay.backend("250 2.0.0 Ok: queued as 1234\r\n221 2.0.0 Bye\r\n") ==
          "250 2.0.0 Ok: queued as 1234\r\n221 2.0.0 Bye\r\n");
    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
}

TEST_CASE("relay counts the reply to the end of data") {
    Relay relay;
    enter_data(relay);
    CHECK(relay.client("body\r\n.\r\nEHLO client.example\r\n") == "body\r\n.\r\nEHLO client.example\r\n");
    CHECK(relay.backend("250 2.0.0 Ok: queued as 1234\r\n" + kEhloReply) ==
          "250 2.0.0 Ok: queued as 1234\r\n" + kEhloStripped);
}

TEST_CASE("relay returns to the command phase after the end of data") {
    Relay relay;
    enter_data(relay);
    CHECK(relay.client("XCLIENT in the body\r\n") == "XCLIENT in the body\r\n");
    CHECK(relay.client(".\r\nXCLIENT ADDR=127.0.0.1\r\n") == ".\r\n" + std::string(kBlocked));
}

TEST_CASE("relay finds the end of data split byte by byte") {
    Relay relay;
    enter_data(relay);
    const std::string content = "line one\r\nXCLIENT ADDR=127.0.0.1\r\n.\r\n";
    CHECK(relay.client_drip(content + "XFORWARD ADDR=127.0.0.1\r\n") == content + std::string(kBlocked));
}

TEST_CASE("relay ends data at a first line of a single dot") {
    Relay relay;
    enter_data(relay);
    CHECK(relay.client(".\r\nxclient ADDR=127.0.0.1\r\n") == ".\r\n" + std::string(kBlocked));
}

TEST_CASE("relay does not end data at look-alikes of the end of data") {
    const std::string content =
        "a\r\n..\r\n"         // dot-stuffed line
        "b\r\n. \r\n"         // dot and space
        "c\n.\n"              // bare LF around the dot
        "d\r\n.\n"            // bare LF after the dot
        "e\n.\r\n"            // bare LF before the dot
        "f\r.\r\n"            // bare CR before the dot
        "XCLIENT ADDR=127.0.0.1\r\n";
    SUBCASE("normalize: bare line ends become CRLF and the dot lines they make are stuffed") {
        RelayFilter::Options options;
        options.bare_lf = BareLf::Normalize;
        Relay relay(options);
        enter_data(relay);
        CHECK(relay.client(content) ==
              "a\r\n..\r\nb\r\n. \r\nc\r\n..\r\nd\r\n..\r\ne\r\n..\r\nf\r\n..\r\nXCLIENT ADDR=127.0.0.1\r\n");
        CHECK(relay.client("\r\n.\r\nXCLIENT ADDR=127.0.0.1\r\n") == "\r\n.\r\n" + std::string(kBlocked));
        CHECK(relay.replies.empty());
    }
    SUBCASE("reject: nothing from the first bare LF on, the real end of data is still found") {
        Relay relay;
        enter_data(relay);
        CHECK(relay.client(content) == "a\r\n..\r\nb\r\n. \r\nc");
        CHECK_FALSE(relay.filter.abandon_backend());
        CHECK(relay.client("\r\n.\r\nXCLIENT ADDR=127.0.0.1\r\n") == "");
        CHECK(relay.filter.abandon_backend());
        CHECK(relay.replies ==
              "550 5.5.2 Message contains bare <LF>\r\n421 4.7.0 Connection closed after bare <LF>\r\n");
    }
}

TEST_CASE("relay processes the bytes held behind a refused DATA as commands") {
    Relay relay;
    CHECK(relay.client("DATA\r\nSubject: x\r\nXCLIENT ADDR=127.0.0.1\r\n.\r\nNOOP\r\n") == "DATA\r\n");
    CHECK(relay.backend("554 5.5.1 Error: no valid recipients\r\n") == "554 5.5.1 Error: no valid recipients\r\n");
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.take_released() == "Subject: x\r\n" + std::string(kBlocked) + ".\r\nNOOP\r\n");

    // Another DATA among the released bytes holds again.
    CHECK(relay.client("DATA\r\nXCLIENT ADDR=127.0.0.1\r\n") == "DATA\r\n");
    CHECK(relay.filter.client_held());
}

TEST_CASE("relay releases bytes held behind a refused DATA into a second hold") {
    Relay relay;
    CHECK(relay.client("DATA\r\nRSET\r\nDATA\r\nXCLIENT body line\r\n.\r\n") == "DATA\r\n");
    CHECK(relay.backend("503 5.5.1 Error: need RCPT command\r\n") == "503 5.5.1 Error: need RCPT command\r\n");
    CHECK(relay.take_released() == "RSET\r\nDATA\r\n");
    CHECK(relay.filter.client_held());
    CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n");   // RSET
    CHECK(relay.filter.client_held());
    CHECK(relay.take_released().empty());
    relay.backend("354 go ahead\r\n");
    CHECK(relay.take_released() == "XCLIENT body line\r\n.\r\n");
}

TEST_CASE("relay holds after a DATA sent in lower case with leading space and bare LF") {
    Relay relay;
    CHECK(relay.client(" data\nXCLIENT ADDR=127.0.0.1\r\n") == " data\n");
    CHECK(relay.filter.client_held());
}

TEST_CASE("relay answers an over-long command line itself, forwards none of it, with bounded memory") {
    Relay relay(short_lines());
    const std::string long_noop = "NOOP " + std::string(100000, 'a') + "\r\n";
    std::string out;
    for (size_t i = 0; i < long_noop.size(); i += 1000) {
        out += relay.client(long_noop.substr(i, 1000));
        CHECK(relay.filter.held_bytes() <= 64);
    }
    CHECK(out.empty());
    CHECK(relay.take_replies() == kLineTooLong);

    const std::string long_xclient = "XCLIENT NAME=" + std::string(100000, 'x') + "\r\nNOOP\r\n";
    out.clear();
    for (size_t i = 0; i < long_xclient.size(); i += 999) {
        out += relay.client(long_xclient.substr(i, 999));
        CHECK(relay.filter.held_bytes() <= 64);
    }
    CHECK(out == "NOOP\r\n");
    CHECK(relay.take_replies() == kLineTooLong);
}

TEST_CASE("relay drops an over-long line fed byte by byte") {
    Relay relay(short_lines());
    const std::string line = "bdat " + std::string(200, '9') + " LAST\r\n";
    CHECK(relay.client_drip(line + "RSET\r\n") == "RSET\r\n");
    CHECK(relay.take_replies() == kLineTooLong);
    const std::string fits = "MAIL FROM:<" + std::string(50, 'm') + ">\r\n";   // exactly 64 octets
    REQUIRE(fits.size() == 64);
    CHECK(relay.client_drip(fits) == fits);
}

TEST_CASE("relay keeps enough of a line to see its verb however small max_line is") {
    RelayFilter::Options options;
    options.max_line = 4;
    options.max_command_line = 4;
    Relay relay(options);
    CHECK(relay.client("XCLIENT ADDR=127.0.0.1\r\n") == kBlocked);
    CHECK(relay.client_drip("XFORWARD ADDR=127.0.0.1\r\n") == kBlocked);
}

TEST_CASE("relay counts an unfinished command line among the bytes it keeps") {
    Relay relay;
    CHECK(relay.client("NOOP") == "");
    CHECK(relay.filter.held_bytes() == 4);
    CHECK(relay.client("\r\n") == "NOOP\r\n");
    CHECK(relay.filter.held_bytes() == 0);
}

TEST_CASE("relay counts an over-long command line as one command, answered by itself") {
    Relay relay(short_lines());
    CHECK(relay.client("NOOP " + std::string(500, 'a') + "\r\nEHLO client.example\r\n") == "EHLO client.example\r\n");
    CHECK(relay.take_replies() == kLineTooLong);
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
}

TEST_CASE("relay never forwards an unfinished command line, and an over-long DATA line is no DATA") {
    Relay relay(short_lines());
    CHECK(relay.client("DATA").empty());
    CHECK(relay.client(std::string(100, 'x')).empty());
    CHECK(relay.client("\r\nXCLIENT ADDR=127.0.0.1\r\n") == kBlocked);
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.take_replies() == kLineTooLong);
    CHECK(relay.filter.commands_sent() == 1);
}

// Exim's smtp_read_command() ends a command after 16,384 octets and reads on from the
// octet after the next one as a new command; Postfix skips the rest of the line. A relay
// that judged the line by its head and forwarded the tail had an Exim backend run the
// tail as commands, and take DATA while the relay was in the command phase.
TEST_CASE("relay: the 16,385-octet desync, whatever the tail and however the line is cut") {
    const std::string head = "NOOP " + std::string(16385 - 5, 'a');
    const std::string tails[] = {
        "XCLIENT ADDR=1.2.3.4\r\n",
        "DATA\r\n",
        "BDAT 20 LAST\r\n",
        "STARTTLS\r\n",
        "MAIL FROM:<smuggled@example.org>\r\n",
    };
    for (const std::string& tail : tails) {
        for (size_t piece : {size_t(1000), size_t(4096), size_t(16385), size_t(100000)}) {
            INFO("tail ", tail, " in pieces of ", piece);
            Relay relay;
            std::string out = relay.client_pieces(head + tail + "NOOP\r\n", piece);
            // Only the whole line after the long one reaches the backend.
            CHECK(out == "NOOP\r\n");
            CHECK(relay.take_replies() == kLineTooLong);
            CHECK(relay.filter.held_bytes() <= RelayFilter::Options{}.max_command_line);
        }
    }
}

TEST_CASE("relay: the command line limit is RFC 4954's 12,288 octets of AUTH data plus CRLF") {
    const size_t limit = RelayFilter::Options{}.max_command_line;
    CHECK(limit == 12290);
    CHECK(limit < 16384);   // Exim's SMTP_CMD_BUFFER_SIZE
    const std::string fits = std::string(limit - 2, 'A') + "\r\n";
    const std::string fits_lf = std::string(limit - 1, 'A') + "\n";
    const std::string over = std::string(limit - 1, 'A') + "\r\n";
    for (const std::string& line : {fits, fits_lf}) {
        Relay relay;
        CHECK(relay.client_pieces(line, 777) == line);
        CHECK(relay.replies.empty());
    }
    Relay relay;
    CHECK(relay.client_pieces(over, 777).empty());
    CHECK(relay.take_replies() == kLineTooLong);
    CHECK(relay.client("NOOP\r\n") == "NOOP\r\n");
}

TEST_CASE("relay: the answer to an over-long line waits for the replies owed before it") {
    Relay relay;
    const std::string long_line = "RCPT TO:<" + std::string(20000, 'r') + ">\r\n";
    CHECK(relay.client("MAIL FROM:<a@example.org>\r\nNOOP\r\n" + long_line + "RSET\r\nQUIT\r\n") ==
          "MAIL FROM:<a@example.org>\r\nNOOP\r\n");
    CHECK(relay.replies.empty());
    CHECK(relay.filter.client_held());
    CHECK(relay.backend("250 2.1.0 Ok\r\n") == "250 2.1.0 Ok\r\n");
    CHECK(relay.take_released().empty());
    CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n" + std::string(kLineTooLong));
    CHECK(relay.take_released() == "RSET\r\nQUIT\r\n");
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.filter.commands_sent() == 4);
}

TEST_CASE("relay strips over-long EHLO lines with bounded memory") {
    Relay relay(short_lines());
    relay.client("EHLO client.example\r\n");
    const std::string long_kept = "250-AUTH " + std::string(200, 'P') + "\r\n";
    const std::string reply = "250-mx.example.org\r\n" + long_kept + "250-XCLIENT " + std::string(200, 'N') +
                              "\r\n250-SIZE 1000\r\n250 CHUNKING\r\n";
    const std::string expected = "250-mx.example.org\r\n" + long_kept + "250 SIZE 1000\r\n";
    CHECK(relay.backend_drip(reply) == expected);

    SUBCASE("when the streamed long line was the last kept one, a filler line ends the reply") {
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n" + long_kept + "250 CHUNKING\r\n") ==
              "250-mx.example.org\r\n" + long_kept + "250 XSMTPSCREEN\r\n");
    }
    SUBCASE("an over-long final line that is kept stays final") {
        relay.client("EHLO client.example\r\n");
        const std::string long_final = "250 AUTH " + std::string(200, 'Q') + "\r\n";
        CHECK(relay.backend("250-mx.example.org\r\n250-XCLIENT NAME\r\n" + long_final) ==
              "250-mx.example.org\r\n" + long_final);
    }
}

TEST_CASE("relay keeps memory bounded for a huge EHLO reply and still strips it") {
    Relay relay;
    relay.client("EHLO client.example\r\n");
    std::string reply = "250-mx.example.org\r\n";
    std::string expected = reply;
    for (int i = 0; i < 2000; ++i) {
        reply += "250-X-PADDING-" + std::to_string(i) + "\r\n250-XCLIENT NAME\r\n";
        expected += "250-X-PADDING-" + std::to_string(i) + "\r\n";
    }
    reply += "250 CHUNKING\r\n";
    expected.replace(expected.rfind("250-"), 4, "250 ");
    REQUIRE(reply.size() > 32 * 1024);
    CHECK(relay.backend(reply) == expected);
}

TEST_CASE("relay passes replies nobody asked for and keeps counting") {
    Relay relay;
    CHECK(relay.backend("421 4.4.2 mx.example.org Error: timeout exceeded\r\n") ==
          "421 4.4.2 mx.example.org Error: timeout exceeded\r\n");
    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
}

TEST_CASE("relay streams replies other than EHLO's without waiting for their end") {
    Relay relay;
    relay.client("HELP\r\n");
    CHECK(relay.backend("214-2.0.0 Commands: XCLIENT") == "214-2.0.0 Commands: XCLIENT");
    CHECK(relay.backend(" CHUNKING\r\n214 2.0.0 end\r\n") == " CHUNKING\r\n214 2.0.0 end\r\n");
}

TEST_CASE("relay reads a multi-line 354 as the reply to DATA") {
    Relay relay;
    relay.client("DATA\r\nXCLIENT body\r\n");
    CHECK(relay.backend("354-go\r\n") == "354-go\r\n");
    CHECK(relay.filter.client_held());
    CHECK(relay.backend("354 ahead\r\n") == "354 ahead\r\n");
    CHECK(relay.take_released() == "XCLIENT body\r\n");
}

// ---------------------------------------------------------------------------------
// SMTP smuggling (the README's "SMTP smuggling" section, smuggling.bare_lf)

namespace {

const std::string kRefusedLf = "550 5.5.2 Message contains bare <LF>\r\n421 4.7.0 Connection closed after bare <LF>\r\n";
const std::string kRefusedCr = "550 5.5.2 Message contains bare <CR>\r\n421 4.7.0 Connection closed after bare <CR>\r\n";
const std::string kRefusedLong = "550 5.5.2 Message line too long\r\n421 4.7.0 Connection closed after message line too long\r\n";

RelayFilter::Options normalize() {
    RelayFilter::Options options;
    options.bare_lf = BareLf::Normalize;
    return options;
}

// True if every CR in `s` is followed by LF and every LF preceded by CR.
bool crlf_clean(std::string_view s) {
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return false;
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
    }
    return true;
}

// The ends of data a backend finds in a data-phase stream `s` that begins at a line start
// (the offsets just past each "." line), taking any of CRLF, LF and CR as a line end: the
// most lenient backend there is. For a CRLF-clean stream every backend agrees with it.
std::vector<size_t> lenient_ends(std::string_view s) {
    std::vector<size_t> ends;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find_first_of("\r\n", i);
        if (j == std::string_view::npos) break;
        size_t next = j + (s[j] == '\r' && j + 1 < s.size() && s[j + 1] == '\n' ? 2 : 1);
        if (s.substr(i, j - i) == ".") ends.push_back(next);
        i = next;
    }
    return ends;
}

// A smuggling attempt: a message whose body hides `vector` (a would-be end of data)
// followed by a second transaction, then the real end and a command.
struct Smuggle {
    std::string head = "From: a@example.org\r\nSubject: hi\r\n\r\nhello";
    std::string tail =
        "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
        "XCLIENT ADDR=127.0.0.1\r\nFrom: ceo@example.net\r\n\r\nsmuggled\r\n";
    std::string message(std::string_view vector) const { return head + std::string(vector) + tail + "\r\n.\r\n"; }
};

// The published vectors (SEC Consult 2023 and follow-ups); `cr` when the first bare octet
// is a CR.
struct Vector {
    std::string bytes;
    bool cr;
};
const std::vector<Vector> kVectors = {
    {"\n.\n", false},   {"\n.\r\n", false}, {"\r\n.\n", false}, {"\r.\r\n", true},  {"\r\n.\r", true},
    {"\n.\r", false},   {"\r.\r", true},    {"\r.\n", true},    {"\r\n.\r\r\n", true}, {"\n\n.\n\n", false},
    {"\r\r\n.\r\r\n", true},
};

// Feeds `bytes` in the data phase as one piece (piece 0), octet by octet (1), or split at
// `cut` (piece >= 2 means: first `cut` octets, then the rest).
std::string feed(Relay& relay, std::string_view bytes, int mode, size_t cut = 0) {
    if (mode == 0) return relay.client(bytes);
    if (mode == 1) return relay.client_drip(bytes);
    std::string out = relay.client(bytes.substr(0, cut));   // two statements: in order
    return out + relay.client(bytes.substr(cut));
}

}  // namespace

TEST_CASE("smuggling, reject: no vector gets an end of data or its second message to the backend") {
    Smuggle smuggle;
    for (const auto& vector : kVectors) {
        const std::string message = smuggle.message(vector.bytes);
        const std::string after = "QUIT\r\n";
        for (size_t mode = 0; mode < 2 + message.size(); ++mode) {
            size_t cut = mode < 2 ? 0 : mode - 2;
            CAPTURE(vector.bytes);
            CAPTURE(mode);
            Relay relay;
            enter_data(relay);
            std::string to_backend = feed(relay, message.substr(0, message.size() - 1), mode >= 2 ? 2 : int(mode),
                                          std::min(cut, message.size() - 1));
            // Up to the client's real end nothing is answered and nothing abandoned.
            CHECK_FALSE(relay.filter.abandon_backend());
            CHECK(relay.filter.refusal() ==
                  (vector.cr ? RelayFilter::Refusal::BareCr : RelayFilter::Refusal::BareLf));
            CHECK(relay.replies.empty());
            to_backend += relay.client(message.substr(message.size() - 1) + after);
            CHECK(relay.filter.abandon_backend());
            CHECK(relay.replies == (vector.cr ? kRefusedCr : kRefusedLf));
            // The backend got a clean prefix of the message: no end of data, nothing after
            // the vector.
            CHECK(crlf_clean(to_backend));
            CHECK(lenient_ends(to_backend).empty());
            CHECK(message.starts_with(to_backend));
            CHECK(to_backend.size() <= smuggle.head.size() + vector.bytes.size());
            CHECK(to_backend.find("XCLIENT") == std::string::npos);
            CHECK(to_backend.find("MAIL FROM") == std::string::npos);
            // Nothing more goes anywhere.
            CHECK(relay.client("XCLIENT ADDR=127.0.0.1\r\nDATA\r\n") == "");
            CHECK(relay.backend("250 2.0.0 Ok: queued as 1234\r\n") == "");
            CHECK(relay.take_released().empty());
            CHECK(relay.filter.held_bytes() == 0);
        }
    }
}

TEST_CASE("smuggling, normalize: the backend sees exactly one end of data, the real one") {
    Smuggle smuggle;
    for (const auto& vector : kVectors) {
        const std::string message = smuggle.message(vector.bytes);
        // Every vector has one lone dot, on a line a bare line end touches: it goes out stuffed.
        std::string expected_vector = vector.bytes;
        {
            std::string normalized;
            for (size_t i = 0; i < expected_vector.size(); ++i) {
                char c = expected_vector[i];
                if (c == '\r' && i + 1 < expected_vector.size() && expected_vector[i + 1] == '\n') {
                    normalized += "\r\n";
                    ++i;
                } else if (c == '\r' || c == '\n') {
                    normalized += "\r\n";
                } else if (c == '.') {
                    normalized += "..";
                } else {
                    normalized += c;
                }
            }
            // A trailing bare CR of the vector meets the tail's "MAIL": CRLF.
            if (expected_vector.back() == '\r' && !normalized.ends_with("\r\n")) normalized += "\r\n";
            expected_vector = normalized;
        }
        const std::string expected = smuggle.head + expected_vector + smuggle.tail + "\r\n.\r\n";
        for (size_t mode = 0; mode < 2 + message.size(); ++mode) {
            CAPTURE(vector.bytes);
            CAPTURE(mode);
            Relay relay(normalize());
            enter_data(relay);
            std::string to_backend = feed(relay, message + "XCLIENT ADDR=127.0.0.1\r\n", mode >= 2 ? 2 : int(mode),
                                          mode >= 2 ? mode - 2 : 0);
            CHECK(to_backend == expected + std::string(kBlocked));
            std::string_view data(to_backend.data(), expected.size());
            CHECK(crlf_clean(data));
            CHECK(lenient_ends(data) == std::vector<size_t>{data.size()});
            CHECK(data.find("\r\n..\r\n") != std::string_view::npos);
            CHECK(relay.replies.empty());
            CHECK_FALSE(relay.filter.abandon_backend());
            CHECK(relay.filter.refusal() == RelayFilter::Refusal::None);
        }
    }
}

TEST_CASE("smuggling: the vectors' expected normalization, spelled out") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"a\n.\nb", "a\r\n..\r\nb"},          {"a\n.\r\nb", "a\r\n..\r\nb"},   {"a\r\n.\nb", "a\r\n..\r\nb"},
        {"a\r.\r\nb", "a\r\n..\r\nb"},        {"a\r\n.\rb", "a\r\n..\r\nb"},   {"a\n.\rb", "a\r\n..\r\nb"},
        {"a\r\n.\r\r\nb", "a\r\n..\r\n\r\nb"}, {"a\n.x\r\nb", "a\r\n..x\r\nb"}, {"a\n..\r\nb", "a\r\n...\r\nb"},
        {"a\r\n.x\nb", "a\r\n.x\r\nb"},        {"a\rb", "a\r\nb"},              {"a\nb", "a\r\nb"},
        {"a\r\r\nb", "a\r\n\r\nb"},            {"a\n\nb", "a\r\n\r\nb"},
    };
    for (const auto& [in_binding, out] : cases) {
        const auto& in = in_binding;  // clang < 16 cannot capture a structured binding (CAPTURE)
        CAPTURE(in);
        Relay relay(normalize());
        enter_data(relay);
        CHECK(relay.client(in) == out);
        Relay dripped(normalize());
        enter_data(dripped);
        CHECK(dripped.client_drip(in) == out);
    }
}

TEST_CASE("smuggling: the data phase starts at a line start for bare line ends too") {
    SUBCASE("normalize") {
        Relay relay(normalize());
        enter_data(relay);
        CHECK(relay.client(".\nXCLIENT ADDR=127.0.0.1\r\n.\r\n") == "..\r\nXCLIENT ADDR=127.0.0.1\r\n.\r\n");
        CHECK(relay.client("NOOP\r\n") == "NOOP\r\n");   // a command again
    }
    SUBCASE("reject") {
        Relay relay;
        enter_data(relay);
        CHECK(relay.client(".\nXCLIENT ADDR=127.0.0.1\r\n.\r\nNOOP\r\n") == ".");
        CHECK(relay.filter.abandon_backend());
        CHECK(relay.replies == kRefusedLf);
    }
}

TEST_CASE("smuggling: a NUL before the dot is content, not an end of data") {
    for (auto options : {RelayFilter::Options{}, normalize()}) {
        Relay relay(options);
        enter_data(relay);
        const std::string content = std::string("a\r\n\0.\r\nb\r\n.\0\r\n", 14);
        CHECK(relay.client(content) == content);
        CHECK(relay.client(".\r\nXCLIENT x\r\n") == ".\r\n" + std::string(kBlocked));
        CHECK_FALSE(relay.filter.abandon_backend());
    }
}

TEST_CASE("smuggling: XCLIENT after a smuggled end of data never reaches the backend as a command") {
    const std::string message = "Subject: x\r\n\r\nbody\n.\nXCLIENT ADDR=127.0.0.1\r\nMAIL FROM:<a@b>\r\n.\r\n";
    SUBCASE("reject") {
        Relay relay;
        std::string to_backend = relay.client("DATA\r\n" + message);
        CHECK(relay.backend("354 go ahead\r\n") == "354 go ahead\r\n" + kRefusedLf);
        to_backend += relay.take_released();
        CHECK(to_backend == "DATA\r\nSubject: x\r\n\r\nbody");
        CHECK(relay.filter.abandon_backend());
    }
    SUBCASE("normalize") {
        Relay relay(normalize());
        enter_data(relay);
        std::string to_backend = relay.client(message);
        CHECK(to_backend ==
              "Subject: x\r\n\r\nbody\r\n..\r\nXCLIENT ADDR=127.0.0.1\r\nMAIL FROM:<a@b>\r\n.\r\n");
        CHECK(lenient_ends(to_backend) == std::vector<size_t>{to_backend.size()});
        // The backend answers the one real end; the next XCLIENT is a command and blocked.
        CHECK(relay.backend("250 2.0.0 Ok: queued as 1\r\n") == "250 2.0.0 Ok: queued as 1\r\n");
        CHECK(relay.client("XCLIENT ADDR=127.0.0.1\r\n") == kBlocked);
    }
}

TEST_CASE("smuggling, reject: the refusal follows the 354 that released the message") {
    Relay relay;
    relay.client("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r.\r\nMAIL FROM:<e@x>\r\n.\r\nQUIT\r\n");
    CHECK(relay.backend("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n") == "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    CHECK_FALSE(relay.filter.abandon_backend());
    // The rest of the backend's input after the refusal is not passed on either.
    CHECK(relay.backend("354 go ahead\r\n421 4.4.2 timeout\r\n") == "354 go ahead\r\n" + kRefusedCr);
    CHECK(relay.take_released() == "x");
    CHECK(relay.filter.abandon_backend());
    CHECK(relay.replies.empty());   // went with the backend's output, in order
}

TEST_CASE("smuggling: a CR at the end of a read waits for the next octet") {
    SUBCASE("CRLF split") {
        Relay relay;
        enter_data(relay);
        CHECK(relay.client("line\r") == "line");
        CHECK(relay.filter.held_bytes() == 1);
        CHECK(relay.client("\n.\r") == "\r\n.");
        CHECK(relay.client("\n") == "\r\n");
        CHECK(relay.filter.held_bytes() == 0);
        CHECK(relay.client("XCLIENT\r\n") == kBlocked);   // that was the end of data
    }
    SUBCASE("bare CR, reject: the CR never goes out") {
        Relay relay;
        enter_data(relay);
        CHECK(relay.client("line\r") == "line");
        CHECK(relay.client(".\r\n") == "");
        CHECK(relay.filter.refusal() == RelayFilter::Refusal::BareCr);
        CHECK_FALSE(relay.filter.abandon_backend());
        CHECK(relay.client("\r\n.\r") == "");
        CHECK_FALSE(relay.filter.abandon_backend());
        CHECK(relay.client("\n") == "");
        CHECK(relay.filter.abandon_backend());
        CHECK(relay.replies == kRefusedCr);
    }
    SUBCASE("bare CR, normalize") {
        Relay relay(normalize());
        enter_data(relay);
        CHECK(relay.client("line\r\n.\r") == "line\r\n.");
        CHECK(relay.client("x") == ".\r\nx");
    }
}

TEST_CASE("smuggling: text lines over 1000 octets refuse the message") {
    const std::string fits = std::string(998, 'a') + "\r\n";   // 1000 octets with CRLF
    const std::string dot_fits = "." + std::string(997, '.') + "\r\n";
    const std::string too_long = std::string(999, 'b') + "\r\n";
    for (auto options : {RelayFilter::Options{}, normalize()}) {
        for (int mode = 0; mode < 3; ++mode) {
            CAPTURE(mode);
            Relay relay(options);
            enter_data(relay);
            const std::string good = "x\r\n" + fits + dot_fits;
            CHECK(feed(relay, good, mode, 500) == good);
            CHECK(relay.filter.refusal() == RelayFilter::Refusal::None);
            std::string out = feed(relay, too_long + "XCLIENT ADDR=127.0.0.1\r\n\r\n.\r\nQUIT\r\n", mode, 700);
            CHECK(out == std::string(998, 'b'));
            CHECK(relay.filter.abandon_backend());
            CHECK(relay.filter.refusal() == RelayFilter::Refusal::LongLine);
            CHECK(relay.replies == kRefusedLong);
        }
    }
    SUBCASE("max_text_line = 0: no limit") {
        RelayFilter::Options options;
        options.max_text_line = 0;
        Relay relay(options);
        enter_data(relay);
        const std::string huge = std::string(100000, 'c') + "\r\n.\r\n";
        CHECK(relay.client_pieces(huge, 4096) == huge);
        CHECK_FALSE(relay.filter.abandon_backend());
    }
    SUBCASE("a long line that ends the message still finds the real end") {
        Relay relay;
        enter_data(relay);
        CHECK(relay.client(std::string(5000, 'd') + "\r\n.\r\n") == std::string(998, 'd'));
        CHECK(relay.filter.abandon_backend());
    }
}

TEST_CASE("smuggling: a clean 10 MB message passes unchanged with bounded state") {
    std::string message = "Subject: big\r\n\r\n";
    for (int i = 0; message.size() < 10 * 1024 * 1024; ++i) {
        if (i % 50 == 0) message += "..stuffed line\r\n";
        message += "Lorem ipsum dolor sit amet, consectetur adipiscing elit, line " + std::to_string(i) + "\r\n";
    }
    message += ".\r\n";
    for (auto options : {RelayFilter::Options{}, normalize()}) {
        for (size_t piece : {size_t{65536}, size_t{1000}, message.size()}) {
            CAPTURE(piece);
            Relay relay(options);
            enter_data(relay);
            std::string out;
            out.reserve(message.size());
            for (size_t at = 0; at < message.size(); at += piece) {
                relay.filter.from_client(std::string_view(message).substr(at, piece), out, relay.replies);
                CHECK(relay.filter.held_bytes() <= 1);
            }
            CHECK(out == message);
            CHECK(relay.client("XCLIENT\r\n") == kBlocked);
        }
    }
}

TEST_CASE("smuggling: 10 MB of bare-LF lines are normalized") {
    std::string message;
    std::string expected;
    for (int i = 0; message.size() < 10 * 1024 * 1024; ++i) {
        message += "line " + std::to_string(i) + "\n";
        expected += "line " + std::to_string(i) + "\r\n";
    }
    message += "\r\n.\r\n";
    expected += "\r\n.\r\n";
    Relay relay(normalize());
    enter_data(relay);
    // About 1.5 million lines: a rescan per line (quadratic) would run past the test's
    // timeout. How fast it is belongs in bench/, not here.
    std::string out = relay.client(message);
    CHECK(out == expected);

    Relay rejecting;
    enter_data(rejecting);
    CHECK(rejecting.client(message) == "line 0");
    CHECK(rejecting.filter.abandon_backend());
}

namespace {

// Reference models, written for clarity, not speed: what the filter must send the backend
// for a data-phase input `s` that contains the client's real end of data.
struct Expected {
    std::string to_backend;
    RelayFilter::Refusal refusal = RelayFilter::Refusal::None;
    size_t consumed = 0;   // up to and including the real end
};

Expected reference(std::string_view s, BareLf mode) {
    // The real end: the first "." line between CRLFs, the data start being a line start.
    std::string framed = "\r\n" + std::string(s);
    size_t real_end = framed.find("\r\n.\r\n") + 5 - 2;
    std::string_view msg = s.substr(0, real_end);
    Expected e;
    e.consumed = real_end;
    if (mode == BareLf::Reject) {
        for (size_t i = 0; i < msg.size(); ++i) {
            bool bare_cr = msg[i] == '\r' && msg[i + 1] != '\n';
            bool bare_lf = msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r');
            if (bare_cr || bare_lf) {
                e.to_backend = std::string(msg.substr(0, i));
                e.refusal = bare_cr ? RelayFilter::Refusal::BareCr : RelayFilter::Refusal::BareLf;
                return e;
            }
        }
        e.to_backend = std::string(msg);
        return e;
    }
    // Normalize: split into lines at CRLF, LF and lone CR; every line end becomes CRLF; a
    // line after a bare line end that begins with "." gets another, and so does a lone "."
    // that a bare line end closes.
    bool bare_before = false;
    size_t i = 0;
    while (i < msg.size()) {
        size_t j = msg.find_first_of("\r\n", i);
        std::string_view line = msg.substr(i, j - i);
        bool real = msg[j] == '\r' && msg[j + 1] == '\n';
        if (!line.empty() && line[0] == '.' && (bare_before || (line == "." && !real))) e.to_backend += '.';
        e.to_backend += line;
        e.to_backend += "\r\n";
        bare_before = !real;
        i = j + (real ? 2 : 1);
    }
    return e;
}

// The filter's output for s, fed whole, byte by byte, and in three random pieces, is
// the reference model's, in both modes.
template <typename Random>
void check_against_reference(const std::string& s, Random& rnd) {
    for (BareLf mode : {BareLf::Reject, BareLf::Normalize}) {
        CAPTURE(s);
        Expected e = reference(s, mode);
        RelayFilter::Options options;
        options.bare_lf = mode;
        std::string after = std::string(s.substr(e.consumed));
        bool refused = e.refusal != RelayFilter::Refusal::None;
        for (int split = 0; split < 4; ++split) {
            Relay relay(options);
            enter_data(relay);
            std::string out;
            if (split == 0) out = relay.client(s);
            else if (split == 1) out = relay.client_drip(s);
            else {
                size_t a = rnd(uint32_t(s.size() + 1)), b = rnd(uint32_t(s.size() + 1));
                if (a > b) std::swap(a, b);
                out = relay.client(s.substr(0, a));
                out += relay.client(s.substr(a, b - a));
                out += relay.client(s.substr(b));
            }
            CHECK(out == e.to_backend + (refused ? "" : after));
            CHECK(relay.filter.refusal() == e.refusal);
            CHECK(relay.filter.abandon_backend() == refused);
            CHECK(relay.replies ==
                  (!refused ? "" : e.refusal == RelayFilter::Refusal::BareCr ? kRefusedCr : kRefusedLf));
            std::string_view data(out.data(), e.to_backend.size());
            CHECK(crlf_clean(data));
            CHECK(lenient_ends(data).size() == (refused ? 0u : 1u));
        }
    }
}

}  // namespace

TEST_CASE("smuggling: random streams match the reference model however they are split") {
    uint32_t seed = 12345;
    auto rnd = [&seed](uint32_t n) {
        seed = seed * 1103515245u + 12345u;
        return (seed >> 8) % n;
    };
    const char alphabet[] = {'\r', '\n', '.', 'a', '\0', ' '};
    for (int round = 0; round < 3000; ++round) {
        CAPTURE(round);
        std::string s;
        size_t len = rnd(40);
        for (size_t k = 0; k < len; ++k) s += alphabet[rnd(sizeof alphabet)];
        s += "\r\n.\r\n" "NOOP\r\n";
        check_against_reference(s, rnd);
    }
}

TEST_CASE("smuggling: long text runs match the reference model (the 16-octet scan and its tail)") {
    uint32_t seed = 777;
    auto rnd = [&seed](uint32_t n) {
        seed = seed * 1103515245u + 12345u;
        return (seed >> 8) % n;
    };
    const char specials[] = {'\r', '\n', '.'};
    for (int round = 0; round < 1500; ++round) {
        CAPTURE(round);
        std::string s;
        size_t len = rnd(400);
        for (size_t k = 0; k < len; ++k) {
            // Mostly text, so that runs of 16 and more octets between line ends are common.
            s += rnd(24) == 0 ? specials[rnd(sizeof specials)] : static_cast<char>('a' + rnd(26));
        }
        s += "\r\n.\r\n" "NOOP\r\n";
        check_against_reference(s, rnd);
    }
}

// ---------------------------------------------------------------------------------
// terminate_starttls: smtpscreen is the client's TLS server (the README's "STARTTLS" section)

namespace {

constexpr std::string_view kReady = "220 2.0.0 Ready to start TLS\r\n";
constexpr std::string_view kSyntax = "501 5.5.4 Syntax: STARTTLS\r\n";
constexpr std::string_view kActive = "554 5.5.1 Error: TLS already active\r\n";

RelayFilter::Options terminate_tls() {
    RelayFilter::Options options;
    options.terminate_starttls = true;
    return options;
}

// kEhloReply with the backend's STARTTLS (and the other stripped lines) gone and ours
// before the final line.
const std::string kEhloOffered =
    "250-mx.example.org\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-STARTTLS\r\n"
    "250 8BITMIME\r\n";
// The same reply once TLS is active: no STARTTLS at all.
const std::string kEhloInTls =
    "250-mx.example.org\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250 8BITMIME\r\n";

size_t count_of(std::string_view text, std::string_view what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Takes the relay through STARTTLS and the (session's) handshake.
void establish_tls(Relay& relay) {
    REQUIRE(relay.client("STARTTLS\r\n").empty());
    REQUIRE(relay.take_replies() == kReady);
    REQUIRE(relay.filter.start_tls_now());
    REQUIRE(relay.tls_established() == "RSET\r\n");
    REQUIRE(relay.backend("250 2.0.0 Ok\r\n").empty());   // our RSET's reply
    REQUIRE_FALSE(relay.filter.start_tls_now());
    REQUIRE(relay.filter.tls_active());
}

}  // namespace

TEST_CASE("terminate_starttls: the EHLO reply offers our STARTTLS instead of the backend's") {
    Relay relay(terminate_tls());
    CHECK(relay.client("EHLO client.example\r\n") == "EHLO client.example\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloOffered);
    CHECK(count_of(kEhloOffered, "STARTTLS") == 1);

    SUBCASE("a backend that offers no STARTTLS") {
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n") ==
              "250-mx.example.org\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    }
    SUBCASE("a single-line reply: STARTTLS follows the server's name as the final line") {
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250 mx.example.org\r\n") == "250-mx.example.org\r\n250 STARTTLS\r\n");
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250\r\n") == "250-\r\n250 STARTTLS\r\n");
    }
    SUBCASE("the backend's STARTTLS as its final line is replaced, never doubled") {
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n") ==
              "250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250-STARTTLS\r\n250 starttls\r\n") ==
              "250-mx.example.org\r\n250 STARTTLS\r\n");
    }
    SUBCASE("a final line stripped for another reason: STARTTLS becomes the final line") {
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250-8BITMIME\r\n250 CHUNKING\r\n") ==
              "250-mx.example.org\r\n250-8BITMIME\r\n250 STARTTLS\r\n");
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250 XCLIENT NAME ADDR\r\n") ==
              "250-mx.example.org\r\n250 STARTTLS\r\n");
    }
    SUBCASE("only the reply to EHLO, and only a positive one") {
        relay.client("HELO client.example\r\nEHLO client.example\r\nNOOP\r\n");
        CHECK(relay.backend("250 mx.example.org\r\n") == "250 mx.example.org\r\n");
        CHECK(relay.backend("554 5.7.1 go away\r\n") == "554 5.7.1 go away\r\n");
        CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n");
    }
}

TEST_CASE("terminate_starttls: STARTTLS is added the same however the backend's bytes are split") {
    const std::string reply = kEhloReply + "250 2.0.0 Ok\r\n";
    const std::string expected = kEhloOffered + "250 2.0.0 Ok\r\n";
    Relay dripped(terminate_tls());
    dripped.client("EHLO client.example\r\nNOOP\r\n");
    CHECK(dripped.backend_drip(reply) == expected);
    for (size_t cut = 1; cut < reply.size(); ++cut) {
        INFO("cut at ", cut);
        Relay relay(terminate_tls());
        relay.client("EHLO client.example\r\nNOOP\r\n");
        std::string out = relay.backend(reply.substr(0, cut));
        out += relay.backend(reply.substr(cut));
        CHECK(out == expected);
    }
}

TEST_CASE("terminate_starttls: over-long EHLO lines still get exactly one STARTTLS") {
    RelayFilter::Options options = terminate_tls();
    options.max_line = 64;
    Relay relay(options);
    const std::string long_final = "250 AUTH " + std::string(200, 'Q') + "\r\n";
    const std::string long_kept = "250-AUTH " + std::string(200, 'P') + "\r\n";

    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend_drip("250-mx.example.org\r\n250-STARTTLS\r\n" + long_final) ==
          "250-mx.example.org\r\n250-STARTTLS\r\n" + long_final);

    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend("250-mx.example.org\r\n" + long_kept + "250 CHUNKING\r\n") ==
          "250-mx.example.org\r\n" + long_kept + "250 STARTTLS\r\n");

    relay.client("EHLO client.example\r\n");
    const std::string long_name(200, 'n');
    CHECK(relay.backend_drip("250 " + long_name + "\r\n") == "250-" + long_name + "\r\n250 STARTTLS\r\n");

    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend("250-mx.example.org\r\n250-STARTTLS " + std::string(200, 'S') + "\r\n250 8BITMIME\r\n") ==
          "250-mx.example.org\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
}

TEST_CASE("terminate_starttls: STARTTLS alone gets our 220 and starts TLS") {
    Relay relay(terminate_tls());
    CHECK_FALSE(relay.filter.start_tls_now());
    CHECK(relay.client("STARTTLS\r\n").empty());   // never forwarded
    CHECK(relay.take_replies() == kReady);
    CHECK(relay.filter.start_tls_now());
    CHECK_FALSE(relay.filter.client_held());
    CHECK_FALSE(relay.filter.tls_active());
    CHECK(relay.filter.discarded_after_starttls() == 0);

    CHECK(relay.tls_established() == "RSET\r\n");
    CHECK_FALSE(relay.filter.start_tls_now());
    CHECK(relay.filter.tls_active());
    // The client's new EHLO goes to the backend; its reply offers no STARTTLS any more.
    // The RSET's reply comes first, and is not the client's.
    CHECK(relay.client("EHLO client.example\r\n") == "EHLO client.example\r\n");
    CHECK(relay.backend("250 2.0.0 Ok\r\n" + kEhloReply) == kEhloInTls);
    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend("250 mx.example.org\r\n") == "250 mx.example.org\r\n");
    CHECK(relay.replies.empty());
}

TEST_CASE("terminate_starttls: STARTTLS accepts any case and white space around it, not an argument") {
    for (std::string_view line : {"starttls\r\n", "StartTLS\n", "  STARTTLS \t\r\n"}) {
        INFO("line: ", line);
        Relay relay(terminate_tls());
        CHECK(relay.client(line).empty());
        CHECK(relay.replies == kReady);
        CHECK(relay.filter.start_tls_now());
    }
}

TEST_CASE("terminate_starttls: bytes pipelined after STARTTLS are discarded and counted (CVE-2011-0411)") {
    SUBCASE("in the same read") {
        Relay relay(terminate_tls());
        CHECK(relay.client("STARTTLS\r\nRSET\r\n").empty());
        CHECK(relay.take_replies() == kReady);
        CHECK(relay.filter.start_tls_now());
        CHECK(relay.filter.discarded_after_starttls() == 6);
        CHECK(relay.filter.held_bytes() == 0);
        // More plain text before the handshake is done: discarded too.
        const std::string more = "XCLIENT ADDR=127.0.0.1\r\nMAIL FROM:<x@y>\r\n";
        CHECK(relay.client(more).empty());
        CHECK(relay.filter.discarded_after_starttls() == 6 + more.size());
        CHECK(relay.replies.empty());

        CHECK(relay.tls_established() == "RSET\r\n");
        CHECK(relay.filter.discarded_after_starttls() == 6 + more.size());
        // Nothing of the discarded RSET was forwarded: the backend's replies answer our
        // own RSET, then the EHLO.
        CHECK(relay.client("EHLO client.example\r\n") == "EHLO client.example\r\n");
        CHECK(relay.backend("250 2.0.0 Ok\r\n").empty());
        CHECK(relay.backend(kEhloReply) == kEhloInTls);
        CHECK(relay.replies.empty());
    }
    SUBCASE("byte by byte") {
        Relay relay(terminate_tls());
        CHECK(relay.client_drip("STARTTLS\r\nRSET\r\n").empty());
        CHECK(relay.replies == kReady);
        CHECK(relay.filter.discarded_after_starttls() == 6);
    }
}

TEST_CASE("terminate_starttls: STARTTLS after a pipelined command waits for that command's reply") {
    Relay relay(terminate_tls());
    CHECK(relay.client("NOOP\r\nSTARTTLS\r\nRSET\r\n") == "NOOP\r\n");
    CHECK(relay.replies.empty());
    CHECK_FALSE(relay.filter.start_tls_now());
    CHECK(relay.filter.client_held());
    // Held until our reply: a 503 would make them commands again, our 220 drops them.
    CHECK(relay.filter.held_bytes() == 6);
    CHECK(relay.client("QUIT\r\n").empty());
    CHECK(relay.filter.held_bytes() == 12);
    CHECK(relay.filter.discarded_after_starttls() == 0);

    // A reply half-way out is not the end of it.
    CHECK(relay.backend("250-2.0.0 Ok\r\n250 2.0.0") == "250-2.0.0 Ok\r\n250 2.0.0");
    CHECK_FALSE(relay.filter.start_tls_now());
    // Backend output after the reply that releases our 220 waits for the TLS session.
    CHECK(relay.backend(" still Ok\r\n421 4.4.2 mx.example.org Error: timeout exceeded\r\n") ==
          " still Ok\r\n" + std::string(kReady));
    CHECK(relay.filter.start_tls_now());
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.filter.discarded_after_starttls() == 12);
    CHECK(relay.filter.held_bytes() == 0);
    CHECK(relay.backend("more\r\n").empty());
    CHECK(relay.take_released().empty());

    // What the backend said meanwhile goes out with the handshake, before the RSET is
    // owed a reply, so it is never taken for that reply.
    relay.take_replies();
    CHECK(relay.tls_established() == "RSET\r\n");
    CHECK(relay.take_replies() == "421 4.4.2 mx.example.org Error: timeout exceeded\r\nmore\r\n");
    CHECK(relay.client("EHLO client.example\r\n") == "EHLO client.example\r\n");
    CHECK(relay.backend("250 2.0.0 Ok\r\n").empty());
    CHECK(relay.backend(kEhloReply) == kEhloInTls);
}

TEST_CASE("terminate_starttls: the 220 waits for an unsolicited reply half-way out") {
    Relay relay(terminate_tls());
    CHECK(relay.backend("421-4.3.2 going down\r\n") == "421-4.3.2 going down\r\n");
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.replies.empty());
    CHECK(relay.backend("421 4.3.2 bye\r\n") == "421 4.3.2 bye\r\n" + std::string(kReady));
    CHECK(relay.filter.start_tls_now());
}

TEST_CASE("terminate_starttls: STARTTLS behind a refused DATA is answered after the refusal") {
    Relay relay(terminate_tls());
    CHECK(relay.client("DATA\r\nSTARTTLS\r\nRSET\r\n") == "DATA\r\n");
    CHECK(relay.backend("554 5.5.1 Error: no valid recipients\r\n") ==
          "554 5.5.1 Error: no valid recipients\r\n" + std::string(kReady));
    CHECK(relay.take_released().empty());
    CHECK(relay.filter.start_tls_now());
    CHECK(relay.filter.discarded_after_starttls() == 6);
}

TEST_CASE("terminate_starttls: STARTTLS with an argument gets our 501, in order") {
    for (std::string_view line : {"STARTTLS foo\r\n", "starttls x\n", "STARTTLS:now\r\n"}) {
        INFO("line: ", line);
        Relay relay(terminate_tls());
        CHECK(relay.client(line).empty());
        CHECK(relay.take_replies() == kSyntax);
        CHECK_FALSE(relay.filter.start_tls_now());
        CHECK_FALSE(relay.filter.client_held());
        CHECK(relay.client("NOOP\r\n") == "NOOP\r\n");   // still in the command phase
        CHECK(relay.filter.discarded_after_starttls() == 0);
    }
    SUBCASE("behind a pipelined command, and what follows it waits") {
        Relay relay(terminate_tls());
        CHECK(relay.client("NOOP\r\nSTARTTLS foo\r\nRSET\r\n") == "NOOP\r\n");
        CHECK(relay.replies.empty());
        CHECK(relay.filter.client_held());
        CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n" + std::string(kSyntax));
        CHECK_FALSE(relay.filter.client_held());
        CHECK(relay.take_released() == "RSET\r\n");
        CHECK(relay.backend("250 2.0.0 reset\r\n") == "250 2.0.0 reset\r\n");
        relay.client("EHLO client.example\r\n");   // the count is right: this reply is EHLO's
        CHECK(relay.backend(kEhloReply) == kEhloOffered);
    }
    SUBCASE("two in a row behind a command, then a real STARTTLS") {
        Relay relay(terminate_tls());
        CHECK(relay.client("NOOP\r\nSTARTTLS a\r\nSTARTTLS b\r\nSTARTTLS\r\nRSET\r\n") == "NOOP\r\n");
        CHECK(relay.backend("250 2.0.0 Ok\r\n") ==
              "250 2.0.0 Ok\r\n" + std::string(kSyntax) + std::string(kSyntax) + std::string(kReady));
        CHECK(relay.filter.start_tls_now());
        CHECK(relay.filter.discarded_after_starttls() == 6);
    }
    SUBCASE("an over-long STARTTLS line") {
        RelayFilter::Options options = terminate_tls();
        options.max_command_line = 64;
        Relay relay(options);
        CHECK(relay.client_drip("STARTTLS " + std::string(200, 'a') + "\r\nNOOP\r\n") == "NOOP\r\n");
        CHECK(relay.replies == kLineTooLong);
        CHECK_FALSE(relay.filter.start_tls_now());
    }
}

TEST_CASE("terminate_starttls: STARTTLS inside TLS gets our 554, in order") {
    Relay relay(terminate_tls());
    establish_tls(relay);
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kActive);
    CHECK_FALSE(relay.filter.start_tls_now());
    CHECK(relay.filter.tls_active());

    CHECK(relay.client("NOOP\r\nSTARTTLS\r\nRSET\r\n") == "NOOP\r\n");
    CHECK(relay.replies.empty());
    CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n" + std::string(kActive));
    CHECK(relay.take_released() == "RSET\r\n");
    CHECK_FALSE(relay.filter.start_tls_now());

    // Postfix's order: a syntax error is a syntax error first.
    relay.take_replies();
    relay.backend("250 2.0.0 reset\r\n");
    CHECK(relay.client("STARTTLS now\r\n").empty());
    CHECK(relay.replies == kSyntax);
}

TEST_CASE("terminate_starttls: tls_established does nothing before our 220") {
    Relay relay(terminate_tls());
    CHECK(relay.tls_established().empty());
    CHECK_FALSE(relay.filter.tls_active());
    relay.client("NOOP\r\nSTARTTLS\r\n");
    CHECK(relay.tls_established().empty());   // the 220 is not out yet
    CHECK_FALSE(relay.filter.tls_active());
    CHECK(relay.filter.client_held());
    relay.backend("250 2.0.0 Ok\r\n");
    CHECK(relay.filter.start_tls_now());
}

// RFC 3207 §4.2 and docs/design.md, "TLS": the backend never sees the client's STARTTLS,
// so it must never carry a transaction from before the handshake into the TLS session.

constexpr std::string_view kInTransaction = "503 5.5.1 Error: MAIL transaction in progress\r\n";

TEST_CASE("terminate_starttls: STARTTLS inside a mail transaction gets our 503 and the session goes on") {
    Relay relay(terminate_tls());
    CHECK(relay.client("MAIL FROM:<a@example.org>\r\n") == "MAIL FROM:<a@example.org>\r\n");
    CHECK(relay.backend("250 2.1.0 Ok\r\n") == "250 2.1.0 Ok\r\n");
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kInTransaction);
    CHECK_FALSE(relay.filter.start_tls_now());
    CHECK_FALSE(relay.filter.client_held());
    CHECK_FALSE(relay.filter.tls_active());
    // The transaction goes on in clear.
    CHECK(relay.client("RCPT TO:<b@example.net>\r\n") == "RCPT TO:<b@example.net>\r\n");
    CHECK(relay.backend("250 2.1.5 Ok\r\n") == "250 2.1.5 Ok\r\n");
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kInTransaction);
    // RSET ends it: now STARTTLS is taken.
    CHECK(relay.client("RSET\r\n") == "RSET\r\n");
    CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n");
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kReady);
    CHECK(relay.filter.start_tls_now());
}

TEST_CASE("terminate_starttls: pipelined behind MAIL, STARTTLS waits for its reply; what follows is kept") {
    SUBCASE("MAIL accepted: 503, and the bytes behind the STARTTLS are commands") {
        Relay relay(terminate_tls());
        CHECK(relay.client("MAIL FROM:<a@example.org>\r\nSTARTTLS\r\nRCPT TO:<b@example.net>\r\n") ==
              "MAIL FROM:<a@example.org>\r\n");
        CHECK(relay.filter.client_held());
        CHECK(relay.replies.empty());
        CHECK(relay.backend("250 2.1.0 Ok\r\n") == "250 2.1.0 Ok\r\n" + std::string(kInTransaction));
        CHECK(relay.take_released() == "RCPT TO:<b@example.net>\r\n");
        CHECK_FALSE(relay.filter.client_held());
        CHECK(relay.filter.discarded_after_starttls() == 0);
        CHECK(relay.backend("250 2.1.5 Ok\r\n") == "250 2.1.5 Ok\r\n");
    }
    SUBCASE("MAIL refused: no transaction, our 220, and the bytes behind it are dropped") {
        Relay relay(terminate_tls());
        CHECK(relay.client("MAIL FROM:<a@example.org>\r\nSTARTTLS\r\nRCPT TO:<b@example.net>\r\n") ==
              "MAIL FROM:<a@example.org>\r\n");
        CHECK(relay.backend("553 5.7.1 no\r\n") == "553 5.7.1 no\r\n" + std::string(kReady));
        CHECK(relay.take_released().empty());
        CHECK(relay.filter.start_tls_now());
        CHECK(relay.filter.discarded_after_starttls() == std::string_view("RCPT TO:<b@example.net>\r\n").size());
    }
}

TEST_CASE("terminate_starttls: what ends a transaction, as the backend's replies say") {
    auto in_transaction = [](Relay& relay) {
        relay.take_replies();
        relay.client("STARTTLS\r\n");
        return relay.take_replies() == kInTransaction;
    };
    auto open = [](Relay& relay) {
        relay.client("MAIL FROM:<a@example.org>\r\n");
        relay.backend("250 2.1.0 Ok\r\n");
    };
    SUBCASE("an accepted EHLO or HELO") {
        for (std::string_view command : {"EHLO client.example\r\n", "HELO client.example\r\n"}) {
            INFO("command: ", command);
            Relay relay(terminate_tls());
            open(relay);
            relay.client(command);
            relay.backend("250 mx.example.org\r\n");
            CHECK_FALSE(in_transaction(relay));
        }
    }
    SUBCASE("the reply to the end of data, whatever it says") {
        for (std::string_view fate : {"250 2.0.0 Ok: queued as 4Q\r\n", "554 5.7.1 rejected\r\n",
                                      "451 4.3.0 try again\r\n"}) {
            INFO("fate: ", fate);
            Relay relay(terminate_tls());
            open(relay);
            relay.client("RCPT TO:<b@example.net>\r\n");
            relay.backend("250 2.1.5 Ok\r\n");
            relay.client("DATA\r\n");
            relay.backend("354 go ahead\r\n");
            relay.client("Subject: x\r\n\r\nhello\r\n.\r\n");
            CHECK(relay.filter.replies_owed() == 1);
            relay.backend(fate);
            CHECK_FALSE(in_transaction(relay));
        }
    }
    SUBCASE("not a refused EHLO, DATA or RSET") {
        const std::pair<std::string_view, std::string_view> refused[] = {
            {"EHLO\r\n", "501 Syntax: EHLO hostname\r\n"},
            {"DATA\r\n", "554 5.5.1 Error: no valid recipients\r\n"},
            {"RSET\r\n", "421 4.4.2 going down\r\n"},
        };
        for (auto [command, reply] : refused) {
            INFO("command: ", command);
            Relay relay(terminate_tls());
            open(relay);
            relay.client(command);
            relay.backend(reply);
            CHECK(in_transaction(relay));
        }
    }
}

TEST_CASE("terminate_starttls: after the deep tests' replay the backend holds a transaction") {
    RelayFilter::Options options = terminate_tls();
    options.in_transaction = true;
    Relay relay(options);
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kInTransaction);
    relay.client("RSET\r\n");
    relay.backend("250 2.0.0 Ok\r\n");
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kReady);
}

TEST_CASE("terminate_starttls: after the handshake the backend gets an RSET whose reply is ours") {
    Relay relay(terminate_tls());
    relay.client("EHLO before.example\r\n");
    relay.backend(kEhloReply);
    establish_tls(relay);   // the RSET, and its 250 kept from the client
    CHECK(relay.replies.empty());
    CHECK(relay.filter.replies_owed() == 0);
    // Pipelined right behind the handshake, before the RSET's reply: paired in order.
    Relay fast(terminate_tls());
    fast.client("STARTTLS\r\n");
    fast.take_replies();
    CHECK(fast.tls_established() == "RSET\r\n");
    CHECK(fast.client("EHLO after.example\r\nMAIL FROM:<a@example.org>\r\n") ==
          "EHLO after.example\r\nMAIL FROM:<a@example.org>\r\n");
    CHECK(fast.backend_drip("250 2.0.0 Ok\r\n" + kEhloReply + "250 2.1.0 Ok\r\n") == kEhloInTls + "250 2.1.0 Ok\r\n");
    CHECK(fast.filter.replies_owed() == 0);
    CHECK(fast.replies.empty());
    // Whatever the backend answers to the RSET (a 421: it is going away, and its close
    // tells the client), the client is never shown it as the answer to a command of its own.
    Relay refused(terminate_tls());
    refused.client("STARTTLS\r\n");
    refused.take_replies();
    refused.tls_established();
    refused.client("NOOP\r\n");
    CHECK(refused.backend("421 4.3.2 shutting down\r\n250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n");
}

TEST_CASE("terminate_starttls overrides strip_starttls for the client's STARTTLS") {
    RelayFilter::Options options = terminate_tls();
    options.strip_starttls = true;
    Relay relay(options);
    relay.client("EHLO client.example\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloOffered);
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.replies == kReady);
}

TEST_CASE("without terminate_starttls nothing of it happens") {
    SUBCASE("default: STARTTLS is the backend's") {
        Relay relay;
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250 8BITMIME\r\n") == "250-mx.example.org\r\n250 8BITMIME\r\n");
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250 mx.example.org\r\n") == "250 mx.example.org\r\n");
        CHECK(relay.client("STARTTLS\r\nRSET\r\n") == "STARTTLS\r\n");
        CHECK(relay.filter.client_held());
        CHECK_FALSE(relay.filter.start_tls_now());
        CHECK(relay.replies.empty());
        CHECK(relay.filter.discarded_after_starttls() == 0);
    }
    SUBCASE("strip_starttls: STARTTLS blocked, none offered") {
        Relay relay(strip_tls());
        relay.client("EHLO client.example\r\n");
        CHECK(relay.backend("250-mx.example.org\r\n250 8BITMIME\r\n") == "250-mx.example.org\r\n250 8BITMIME\r\n");
        CHECK(relay.client("STARTTLS\r\n") == kBlocked);
        CHECK(relay.client("STARTTLS foo\r\n") == kBlocked);
        CHECK_FALSE(relay.filter.start_tls_now());
        CHECK(relay.replies.empty());
    }
}

TEST_CASE("terminate_starttls: a client already in TLS before the handoff is offered none and gets 554") {
    RelayFilter::Options options = terminate_tls();
    options.tls_already_active = true;
    Relay relay(options);
    CHECK(relay.filter.tls_active());
    CHECK(relay.client("EHLO c.example\r\n") == "EHLO c.example\r\n");
    const std::string to_client = relay.backend("250-mx.example.org\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    CHECK(to_client == "250-mx.example.org\r\n250 8BITMIME\r\n");
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kActive);
    CHECK_FALSE(relay.filter.start_tls_now());
}

// ---------------------------------------------------------------------------------
// Half-close (docs/design.md): the filter is pure and sees no EOF, but the session asks
// it when the client's half-close may go on to the backend and when the backend's EOF
// ends the dialogue.

TEST_CASE("relay: '.' and a pipelined QUIT, then the client's EOF: nothing held, both replies go to the client") {
    Relay relay;
    relay.client("EHLO client.example.org\r\n");
    relay.backend(kEhloReply);
    relay.client("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    relay.backend("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    enter_data(relay);
    // What Exim writes before its shutdown(SHUT_WR): all of it is forwarded at once, so
    // the half-close can follow it to the backend straight away.
    CHECK(relay.client("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n") == "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    CHECK(relay.filter.held_for_backend() == 0);
    CHECK(relay.filter.replies_owed() == 2);
    CHECK_FALSE(relay.filter.quit_answered());
    CHECK(relay.backend("250 2.0.0 Ok: queued as 4XyZ\r\n") == "250 2.0.0 Ok: queued as 4XyZ\r\n");
    CHECK(relay.filter.replies_owed() == 1);
    CHECK_FALSE(relay.filter.quit_answered());
    CHECK(relay.backend("221 2.0.0 Bye\r\n") == "221 2.0.0 Bye\r\n");
    CHECK(relay.filter.replies_owed() == 0);
    CHECK(relay.filter.quit_answered());
}

TEST_CASE("relay: a QUIT pipelined behind DATA is held for the backend until the DATA reply releases it") {
    Relay relay;
    relay.client("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    relay.backend("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    // A client that does not wait for the 354, then half-closes: its half-close must wait
    // for these bytes, which only the backend's reply to DATA releases.
    CHECK(relay.client("DATA\r\nbody\r\n.\r\nQUIT\r\n") == "DATA\r\n");
    CHECK(relay.filter.held_for_backend() == std::string("body\r\n.\r\nQUIT\r\n").size());
    CHECK(relay.backend("354 go ahead\r\n") == "354 go ahead\r\n");
    CHECK(relay.take_released() == "body\r\n.\r\nQUIT\r\n");
    CHECK(relay.filter.held_for_backend() == 0);
    CHECK(relay.filter.replies_owed() == 2);
    relay.backend("250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n");
    CHECK(relay.filter.quit_answered());

    SUBCASE("refused DATA: the held QUIT is a command again, released and answered") {
        Relay r;
        r.client("MAIL FROM:<a@example.org>\r\n");
        r.backend("250 2.1.0 Ok\r\n");
        r.client("DATA\r\nQUIT\r\n");
        CHECK(r.filter.held_for_backend() == 6);
        CHECK(r.backend("554 5.5.1 Error: no valid recipients\r\n") == "554 5.5.1 Error: no valid recipients\r\n");
        CHECK(r.take_released() == "QUIT\r\n");
        CHECK(r.filter.held_for_backend() == 0);
        r.backend("221 2.0.0 Bye\r\n");
        CHECK(r.filter.quit_answered());
    }
}

TEST_CASE("relay: an unfinished command line is no byte owed to the backend at the client's EOF") {
    Relay relay;
    CHECK(relay.client("NOOP\r\nQUI") == "NOOP\r\n");
    CHECK(relay.filter.held_bytes() == 3);
    CHECK(relay.filter.held_for_backend() == 0);   // the half-close need not wait for it
}

TEST_CASE("relay: a QUIT that gets no 221 does not end the dialogue, and its reply is counted") {
    Relay relay;
    relay.client("QUIT\r\n");
    CHECK(relay.filter.replies_owed() == 1);
    relay.backend("500 5.5.2 Error: bad syntax\r\n");
    CHECK_FALSE(relay.filter.quit_answered());
    CHECK(relay.filter.replies_owed() == 0);
    // The reply to a pipelined EHLO after it is still an EHLO reply (stripped).
    relay.client("EHLO x\r\nquit\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
    relay.backend("221 2.0.0 Bye\r\n");
    CHECK(relay.filter.quit_answered());
}

// docs/design.md, "TLS": tls.max_pending_handshakes. The session's take_tls_slot says
// whether a handshake may start; when it may not, the client hears 454 and goes on in clear.
TEST_CASE("terminate_starttls: no handshake slot free: 454, and the session goes on in clear") {
    RelayFilter::Options o = terminate_tls();
    int asked = 0;
    bool free_slot = false;
    o.take_tls_slot = [&] {
        ++asked;
        return free_slot;
    };
    Relay relay(o);
    const std::string to_backend = relay.client("STARTTLS\r\nNOOP\r\n");
    CHECK(relay.take_replies() == "454 4.7.0 TLS not available due to temporary reason\r\n");
    CHECK(asked == 1);
    CHECK_FALSE(relay.filter.start_tls_now());
    // What the client pipelined behind it is commands again, not thrown away.
    CHECK(to_backend + relay.take_released() == "NOOP\r\n");
    CHECK(relay.filter.discarded_after_starttls() == 0);
    CHECK(relay.backend("250 2.0.0 Ok\r\n") == "250 2.0.0 Ok\r\n");
    free_slot = true;
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kReady);
    CHECK(asked == 2);
    CHECK(relay.filter.start_tls_now());
}

TEST_CASE("terminate_starttls: inside a transaction the 503 comes first and no slot is taken") {
    RelayFilter::Options o = terminate_tls();
    int asked = 0;
    o.take_tls_slot = [&] {
        ++asked;
        return true;
    };
    Relay relay(o);
    relay.client("MAIL FROM:<a@example.org>\r\n");
    relay.backend("250 2.1.0 Ok\r\n");
    relay.take_replies();
    CHECK(relay.client("STARTTLS\r\n").empty());
    CHECK(relay.take_replies() == kInTransaction);
    CHECK(asked == 0);
}
