// proxy/command_pairing.h on its own: which reply answers which command, and what the
// client's bytes are meanwhile. The relay as a whole is in test_relay_filter.cpp.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "proxy/command_pairing.h"

using namespace smtpscreen;
using Phase = CommandPairing::Phase;

namespace {

struct Pairing {
    explicit Pairing(CommandPairing::Options options = {}) : pairing(options) {}

    // Client bytes in the command phase; returns what went to the backend.
    std::string client(std::string_view in) {
        std::string to_backend;
        size_t used = pairing.command_bytes(in, to_backend, to_client);
        unused = std::string(in.substr(used));
        return to_backend;
    }
    // One whole backend reply, line by line; returns what the last line completed.
    CommandPairing::Completed reply(std::string_view text, bool* ehlo = nullptr) {
        CommandPairing::Completed done;
        bool first = true;
        while (!text.empty()) {
            size_t lf = text.find('\n');
            std::string_view line = text.substr(0, lf + 1);
            text.remove_prefix(line.size());
            CommandPairing::ReplyPiece piece = pairing.reply_piece(line);
            CHECK(piece.starts_reply == first);
            CHECK(piece.line_ends);
            CHECK(piece.final == text.empty());
            if (ehlo) *ehlo = piece.answers_ehlo;
            first = false;
            done = pairing.line_complete(to_client);
        }
        return done;
    }

    CommandPairing pairing;
    std::string to_client;
    std::string unused;
};

}  // namespace

TEST_CASE("command pairing: DATA holds what follows until its reply says what it is") {
    SUBCASE("354: message content") {
        Pairing p;
        CHECK(p.client("DATA\r\nSubject: x\r\n") == "DATA\r\n");
        CHECK(p.unused == "Subject: x\r\n");   // the caller holds it
        CHECK(p.pairing.phase() == Phase::Held);
        p.pairing.hold(p.unused);
        CommandPairing::Completed done = p.reply("354 go ahead\r\n");
        CHECK(done.data_begins);
        CHECK(done.release_held);
        CHECK(p.pairing.phase() == Phase::Data);
        CHECK(p.pairing.take_held() == "Subject: x\r\n");
    }
    SUBCASE("refused: commands again") {
        Pairing p;
        p.client("DATA\r\n");
        p.pairing.hold("XCLIENT ADDR=127.0.0.1\r\n");
        CommandPairing::Completed done = p.reply("503 5.5.1 need RCPT\r\n");
        CHECK_FALSE(done.data_begins);
        CHECK(done.release_held);
        CHECK(p.pairing.phase() == Phase::Command);
        CHECK(p.client(p.pairing.take_held()) == "XSMTPSCREEN-BLOCKED\r\n");
    }
}

TEST_CASE("command pairing: replies are paired with pipelined commands in order") {
    Pairing p;
    CHECK(p.client("NOOP\r\nEHLO x\r\nRSET\r\n") == "NOOP\r\nEHLO x\r\nRSET\r\n");
    bool ehlo = true;
    p.reply("250 ok\r\n", &ehlo);
    CHECK_FALSE(ehlo);
    p.reply("250-mx\r\n250 SIZE 1\r\n", &ehlo);
    CHECK(ehlo);
    p.reply("250 reset\r\n", &ehlo);
    CHECK_FALSE(ehlo);
    // Nothing is owed now: output nobody asked for is not counted against the next EHLO.
    p.reply("421 4.3.2 shutting down\r\n", &ehlo);
    CHECK_FALSE(ehlo);
    p.client("EHLO y\r\n");
    p.reply("250 mx\r\n", &ehlo);
    CHECK(ehlo);
}

TEST_CASE("command pairing: the end of data is owed a reply of its own") {
    Pairing p;
    p.client("DATA\r\n");
    p.reply("354 go\r\n");
    REQUIRE(p.pairing.phase() == Phase::Data);
    p.pairing.message_ended();
    CHECK(p.pairing.phase() == Phase::Command);
    p.client("EHLO x\r\n");
    bool ehlo = true;
    p.reply("250 queued\r\n", &ehlo);
    CHECK_FALSE(ehlo);   // the message's fate
    p.reply("250 mx\r\n", &ehlo);
    CHECK(ehlo);
}

TEST_CASE("command pairing: commands a client may never send are rewritten, one reply each") {
    Pairing p;
    CHECK(p.client("xclient ADDR=1.2.3.4\r\n XFORWARD NAME=x\nBDAT 10 LAST\r\nPROXY TCP4\r\n") ==
          "XSMTPSCREEN-BLOCKED\r\nXSMTPSCREEN-BLOCKED\r\nXSMTPSCREEN-BLOCKED\r\nXSMTPSCREEN-BLOCKED\r\n");
    CHECK(p.pairing.phase() == Phase::Command);
}

TEST_CASE("command pairing: STARTTLS as the options say") {
    SUBCASE("passed to the backend: held until its reply, opaque after a 220") {
        Pairing p;
        CHECK(p.client("STARTTLS\r\n") == "STARTTLS\r\n");
        CHECK(p.pairing.phase() == Phase::Held);
        p.pairing.hold("injected\r\n");
        CommandPairing::Completed done = p.reply("220 go\r\n");
        CHECK_FALSE(done.release_held);
        CHECK(p.pairing.phase() == Phase::Transparent);
        CHECK(p.pairing.take_held().empty());   // CVE-2011-0411: dropped
    }
    SUBCASE("blocked") {
        CommandPairing::Options options;
        options.strip_starttls = true;
        Pairing p(options);
        CHECK(p.client("STARTTLS\r\n") == "XSMTPSCREEN-BLOCKED\r\n");
    }
    SUBCASE("terminated here, after the replies owed before it") {
        CommandPairing::Options options;
        options.terminate_starttls = true;
        Pairing p(options);
        CHECK(p.client("NOOP\r\nSTARTTLS\r\n") == "NOOP\r\n");
        CHECK(p.pairing.phase() == Phase::TlsWaiting);
        CHECK(p.to_client.empty());
        p.reply("250 ok\r\n");
        CHECK(p.to_client == "220 2.0.0 Ready to start TLS\r\n");
        CHECK(p.pairing.phase() == Phase::TlsStarting);
        p.pairing.tls_established();
        CHECK(p.pairing.tls_active());
        CHECK(p.pairing.phase() == Phase::Command);
        p.to_client.clear();
        CHECK(p.client("STARTTLS\r\n").empty());
        CHECK(p.to_client == "554 5.5.1 Error: TLS already active\r\n");
    }
}

TEST_CASE("command pairing: an unfinished command line is kept, and counted") {
    Pairing p;
    CHECK(p.client("NOO").empty());
    CHECK(p.pairing.held_bytes() == 3);
    CHECK(p.client("P\r\n") == "NOOP\r\n");
    CHECK(p.pairing.held_bytes() == 0);
}
