// Fuzz target: stats/http_request.h, the metrics endpoint's reading of a scrape
// request. The input is what a scraper (or anyone who reaches stats.listen) sends. The
// first octet picks the limits (the production ones or tiny ones, so the limit paths
// are a few octets away); the rest is fed whole, then in pieces cut where the input
// decides, then one octet at a time. The answer must not depend on the cuts, must be
// one the endpoint knows, must keep no more than the limits allow, and a 200 is only
// ever the answer to a GET or HEAD of /metrics.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "stats/http_request.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;
using State = HttpRequestReader::State;

namespace {

struct Outcome {
    State state;
    int status;
    bool head;
    std::string url;
};

bool operator==(const Outcome& a, const Outcome& b) {
    return a.state == b.state && a.status == b.status && a.head == b.head;
}

std::string describe(const Outcome& o) {
    return std::string(o.state == State::Done ? "Done " : "NeedMore ") + std::to_string(o.status) +
           (o.head ? " HEAD" : "") + " url " + escaped(o.url, 60);
}

void check_held(const HttpRequestReader& r, const HttpRequestLimits& limits, std::string_view in) {
    FUZZ_CHECK(r.url().size() <= limits.max_url,
               "kept a URL of " + std::to_string(r.url().size()) + " octets from " + escaped(in));
}

Outcome finish(const HttpRequestReader& r) { return {r.state(), r.status(), r.head(), r.url()}; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const bool tiny = (data[0] & 1) != 0;
    HttpRequestLimits limits;
    if (tiny) {
        limits.max_url = 16;
        limits.max_headers = 3;
        limits.max_header_bytes = 40;
        limits.max_request_bytes = 120;
    }
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    fuzz::InputRandom rnd(in);

    HttpRequestReader whole(limits);
    whole.feed(in);
    check_held(whole, limits, in);
    const Outcome expect = finish(whole);

    HttpRequestReader pieces(limits);
    for (size_t at = 0; at < in.size();) {
        const size_t n = 1 + rnd.below(std::min<size_t>(in.size() - at, 64));
        pieces.feed(in.substr(at, n));
        check_held(pieces, limits, in);
        at += n;
    }
    FUZZ_CHECK(finish(pieces) == expect,
               "in pieces " + describe(finish(pieces)) + ", whole " + describe(expect) + ", input " + escaped(in));

    HttpRequestReader octets(limits);
    for (size_t i = 0; i < in.size() && octets.state() == State::NeedMore; ++i) octets.feed(in.substr(i, 1));
    FUZZ_CHECK(finish(octets) == expect,
               "octet by octet " + describe(finish(octets)) + ", whole " + describe(expect) + ", input " + escaped(in));

    // However the input goes on, the answer is known once the request head's limit is past.
    FUZZ_CHECK(in.size() <= limits.max_request_bytes || expect.state == State::Done,
               "no answer after " + std::to_string(in.size()) + " octets: " + escaped(in));
    if (expect.state == State::NeedMore) {
        FUZZ_CHECK(expect.status == 0, "a status before the request was read: " + describe(expect));
        return 0;
    }
    static constexpr int kKnown[] = {200, 400, 404, 405, 413, 414, 431};
    FUZZ_CHECK(std::find(std::begin(kKnown), std::end(kKnown), expect.status) != std::end(kKnown),
               "answer " + describe(expect) + " to " + escaped(in));
    if (expect.status == 200) {
        // http_parser skips empty lines before a request (RFC 9112 2.2).
        std::string_view request = in.substr(std::min(in.find_first_not_of("\r\n"), in.size()));
        const bool get = request.substr(0, 4) == "GET ";
        const bool head = request.substr(0, 5) == "HEAD ";
        FUZZ_CHECK(get || head, "200 to " + escaped(in));
        FUZZ_CHECK(expect.head == head, "HEAD flag wrong for " + escaped(in));
        std::string_view path = std::string_view(expect.url).substr(0, expect.url.find_first_of("?#"));
        FUZZ_CHECK(path == "/metrics", "200 for the target " + escaped(expect.url));
    } else {
        FUZZ_CHECK(!whole.why().empty(), "no reason for " + describe(expect));
    }
    // The answer that goes back is one well-formed response, whatever the request was.
    const std::string body = "x 1\n";
    const std::string response = http_response(expect.status, "text/plain", body, expect.head);
    const std::string status_line = "HTTP/1.1 " + std::to_string(expect.status) + " ";
    FUZZ_CHECK(response.rfind(status_line, 0) == 0, "response " + escaped(response));
    const size_t end = response.find("\r\n\r\n");
    FUZZ_CHECK(end != std::string::npos, "response without the end of its headers");
    FUZZ_CHECK(response.find("Content-Length: " + std::to_string(body.size()) + "\r\n") < end,
               "response " + escaped(response));
    FUZZ_CHECK(response.size() - end - 4 == (expect.head ? 0 : body.size()), "response " + escaped(response));
    return 0;
}
