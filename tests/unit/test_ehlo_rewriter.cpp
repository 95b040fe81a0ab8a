// proxy/ehlo_rewriter.h on its own: the backend's EHLO reply as the client gets it. The
// relay as a whole, which decides which reply is EHLO's, is in test_relay_filter.cpp.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "proxy/ehlo_rewriter.h"

using namespace smtpscreen;

namespace {

// Feeds one reply in pieces of at most `piece` octets, as the relay does: never past a
// line's LF, with the line's head so far.
std::string rewrite(EhloRewriter& rewriter, std::string_view reply, bool offer = false, size_t piece = SIZE_MAX) {
    std::string out;
    rewriter.begin(offer);
    std::string head;
    while (!reply.empty()) {
        size_t lf = reply.find('\n');
        size_t take = std::min(piece, lf == std::string_view::npos ? reply.size() : lf + 1);
        std::string_view segment = reply.substr(0, take);
        reply.remove_prefix(take);
        if (head.size() < 4) head.append(segment.substr(0, 4 - head.size()));
        bool line_ends = segment.back() == '\n';
        bool final = line_ends && (head.size() < 4 || head[3] != '-');
        rewriter.bytes(segment, head, line_ends, final, out);
        if (line_ends) head.clear();
    }
    return out;
}

EhloRewriter::Options options(bool strip_starttls, size_t max_line = 4096) {
    EhloRewriter::Options o;
    o.strip_starttls = strip_starttls;
    o.max_line = max_line;
    return o;
}

const std::string kReply =
    "250-mx.example.org\r\n"
    "250-PIPELINING\r\n"
    "250-XCLIENT NAME ADDR\r\n"
    "250-STARTTLS\r\n"
    "250-xforward NAME\r\n"
    "250 CHUNKING\r\n";

}  // namespace

TEST_CASE("ehlo rewriter: XCLIENT, XFORWARD and CHUNKING go, the last kept line becomes final") {
    EhloRewriter rewriter(options(false));
    const std::string expected = "250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
    CHECK(rewrite(rewriter, kReply) == expected);
    SUBCASE("the same byte by byte") { CHECK(rewrite(rewriter, kReply, false, 1) == expected); }
}

TEST_CASE("ehlo rewriter: STARTTLS goes only when told to, and ours is added only when offered") {
    SUBCASE("stripped") {
        EhloRewriter rewriter(options(true));
        CHECK(rewrite(rewriter, kReply) == "250-mx.example.org\r\n250 PIPELINING\r\n");
    }
    SUBCASE("stripped and ours offered: it becomes the final line") {
        EhloRewriter rewriter(options(true));
        CHECK(rewrite(rewriter, kReply, true) == "250-mx.example.org\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    }
    SUBCASE("a one-line reply: ours follows the server's name") {
        EhloRewriter rewriter(options(true));
        CHECK(rewrite(rewriter, "250 mx.example.org\r\n", true) == "250-mx.example.org\r\n250 STARTTLS\r\n");
    }
    SUBCASE("a refusal offers nothing") {
        EhloRewriter rewriter(options(true));
        CHECK(rewrite(rewriter, "554 5.7.1 go away\r\n", true) == "554 5.7.1 go away\r\n");
    }
}

TEST_CASE("ehlo rewriter: begin() starts each reply afresh") {
    EhloRewriter rewriter(options(false));
    rewrite(rewriter, "250-mx\r\n250-XCLIENT NAME\r\n");   // cut off half-way
    // The first line of the next reply is the server's name, never a keyword.
    CHECK(rewrite(rewriter, "250-XCLIENT.example.org\r\n250 SIZE 10\r\n") == "250-XCLIENT.example.org\r\n250 SIZE 10\r\n");
}

TEST_CASE("ehlo rewriter: over-long lines are judged by their head, streamed or dropped") {
    EhloRewriter rewriter(options(false, 64));
    const std::string long_kept = "250-AUTH " + std::string(300, 'P') + "\r\n";
    const std::string long_stripped = "250-XCLIENT " + std::string(300, 'N') + "\r\n";
    CHECK(rewrite(rewriter, "250-mx\r\n" + long_kept + long_stripped + "250 SIZE 1\r\n", false, 7) ==
          "250-mx\r\n" + long_kept + "250 SIZE 1\r\n");
    // Nothing kept after a streamed line: a filler keyword closes the reply.
    CHECK(rewrite(rewriter, "250-mx\r\n" + long_kept + long_stripped.substr(0, 3) + " CHUNKING\r\n") ==
          "250-mx\r\n" + long_kept + "250 XSMTPSCREEN\r\n");
}
