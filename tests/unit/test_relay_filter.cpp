#include <doctest/doctest.h>

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
    return options;
}

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

TEST_CASE("relay streams over-long command lines with bounded memory") {
    Relay relay(short_lines());
    const std::string long_noop = "NOOP " + std::string(100000, 'a') + "\r\n";
    std::string out;
    for (size_t i = 0; i < long_noop.size(); i += 1000) {
        out += relay.client(long_noop.substr(i, 1000));
        CHECK(relay.filter.held_bytes() <= 64);
    }
    CHECK(out == long_noop);

    // The verb of an over-long line is judged from its first bytes, and its tail dropped.
    const std::string long_xclient = "XCLIENT NAME=" + std::string(100000, 'x') + "\r\nNOOP\r\n";
    out.clear();
    for (size_t i = 0; i < long_xclient.size(); i += 999) {
        out += relay.client(long_xclient.substr(i, 999));
        CHECK(relay.filter.held_bytes() <= 64);
    }
    CHECK(out == std::string(kBlocked) + "NOOP\r\n");
}

TEST_CASE("relay judges an over-long line fed byte by byte") {
    Relay relay(short_lines());
    const std::string line = "bdat " + std::string(200, '9') + " LAST\r\n";
    CHECK(relay.client_drip(line + "RSET\r\n") == std::string(kBlocked) + "RSET\r\n");
    const std::string fits = "MAIL FROM:<" + std::string(50, 'm') + ">\r\n";   // exactly 64 octets
    REQUIRE(fits.size() == 64);
    CHECK(relay.client_drip(fits) == fits);
}

TEST_CASE("relay keeps enough of a line to see its verb however small max_line is") {
    RelayFilter::Options options;
    options.max_line = 4;
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

TEST_CASE("relay counts an over-long command line as one command") {
    Relay relay(short_lines());
    relay.client("NOOP " + std::string(500, 'a') + "\r\nEHLO client.example\r\n");
    CHECK(relay.backend("500 5.5.2 Error: line too long\r\n") == "500 5.5.2 Error: line too long\r\n");
    CHECK(relay.backend(kEhloReply) == kEhloStripped);
}

TEST_CASE("relay holds after an over-long DATA line only once the line has ended") {
    Relay relay(short_lines());
    const std::string line = "DATA " + std::string(100, 'x');
    CHECK(relay.client(line) == line);
    CHECK_FALSE(relay.filter.client_held());
    CHECK(relay.client("\r\nXCLIENT ADDR=127.0.0.1\r\n") == "\r\n");
    CHECK(relay.filter.client_held());
    relay.backend("501 5.5.4 Syntax: DATA\r\n");
    CHECK(relay.take_released() == kBlocked);
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
