// stats/http_request.h: what the metrics endpoint answers to each request, decided by
// http_parser's reading of it, and the bounds a hostile scraper meets.
#include <doctest/doctest.h>

#include <string>

#include "stats/http_request.h"

using namespace smtpscreen;

namespace {

struct Answer {
    HttpRequestReader::State state;
    int status;
    bool head;
};

Answer whole(const std::string& request, HttpRequestLimits limits = {}) {
    HttpRequestReader r(limits);
    auto state = r.feed(request);
    return {state, r.status(), r.head()};
}

Answer byte_by_byte(const std::string& request, HttpRequestLimits limits = {}) {
    HttpRequestReader r(limits);
    auto state = HttpRequestReader::State::NeedMore;
    for (char c : request) state = r.feed(std::string_view(&c, 1));
    return {state, r.status(), r.head()};
}

}  // namespace

TEST_CASE("http request: GET and HEAD of /metrics are answered 200, however the bytes are cut") {
    const std::string get = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9425\r\nAccept: text/plain\r\n\r\n";
    for (auto a : {whole(get), byte_by_byte(get)}) {
        CHECK(a.state == HttpRequestReader::State::Done);
        CHECK(a.status == 200);
        CHECK_FALSE(a.head);
    }
    auto head = whole("HEAD /metrics HTTP/1.0\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(head.head);
    // Prometheus adds no query, but a scraper may: the path decides.
    CHECK(whole("GET /metrics?name[]=up HTTP/1.1\r\nHost: x\r\n\r\n").status == 200);
}

TEST_CASE("http request: nothing is decided before the headers end") {
    HttpRequestReader r;
    CHECK(r.feed("GET /metrics HTTP/1.1\r\nHost: x\r\n") == HttpRequestReader::State::NeedMore);
    CHECK(r.feed("\r\n") == HttpRequestReader::State::Done);
    CHECK(r.status() == 200);
    // What follows the request (a pipelined one) changes nothing.
    CHECK(r.feed("POST /x HTTP/1.1\r\n\r\n") == HttpRequestReader::State::Done);
    CHECK(r.status() == 200);
}

TEST_CASE("http request: other paths 404, other methods 405") {
    CHECK(whole("GET / HTTP/1.1\r\n\r\n").status == 404);
    CHECK(whole("GET /metricsx HTTP/1.1\r\n\r\n").status == 404);
    CHECK(whole("GET http://host/other HTTP/1.1\r\n\r\n").status == 404);
    CHECK(whole("DELETE /metrics HTTP/1.1\r\n\r\n").status == 405);
    CHECK(whole("OPTIONS /metrics HTTP/1.1\r\n\r\n").status == 405);
    // A method http_parser does not know at all is refused at its first bytes.
    CHECK(whole("BREW /metrics HTTP/1.1\r\n\r\n").status == 405);
    CHECK(byte_by_byte("FROB /metrics HTTP/1.1\r\n\r\n").status == 405);
}

TEST_CASE("http request: a body is never read (413), a bogus Content-Length is 400") {
    CHECK(whole("GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").status == 413);
    CHECK(whole("GET /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n").status == 413);
    CHECK(whole("GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").status == 413);
    CHECK(whole("GET /metrics HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n").status == 400);
    CHECK(whole("GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n").status == 400);
    CHECK(whole("GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status == 400);
    // An empty body is no body.
    CHECK(whole("GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status == 200);
}

TEST_CASE("http request: garbage is 400") {
    CHECK(whole("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").status == 400);  // a TLS ClientHello
    CHECK(whole("GET /metrics HTTP/9.Z\r\n\r\n").status == 400);
    CHECK(whole("GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n").status == 400);
    CHECK(whole(std::string("\0\1", 2)).status == 400);
    // An upper-case word is taken for a method it does not implement, whatever it is.
    CHECK(whole("EHLO smtp.example\r\n").status == 405);
}

TEST_CASE("http request: a long URL is refused at the limit, never kept whole (414)") {
    HttpRequestLimits limits;
    limits.max_url = 1024;
    HttpRequestReader r(limits);
    std::string url(1 << 20, 'a');
    CHECK(r.feed("GET /" + url) == HttpRequestReader::State::Done);
    CHECK(r.status() == 414);
    CHECK(r.url().size() <= 1024);
    // The same cut into pieces, as a slow scraper sends it.
    HttpRequestReader slow(limits);
    slow.feed("GET /");
    auto state = HttpRequestReader::State::NeedMore;
    for (int i = 0; i < 200 && state == HttpRequestReader::State::NeedMore; ++i) state = slow.feed(std::string(10, 'b'));
    CHECK(state == HttpRequestReader::State::Done);
    CHECK(slow.status() == 414);
    CHECK(slow.url().size() <= 1024);
}

TEST_CASE("http request: too many or too long headers are 431") {
    std::string many = "GET /metrics HTTP/1.1\r\n";
    for (int i = 0; i < 20000; ++i) many += "X-" + std::to_string(i) + ": y\r\n";
    many += "\r\n";
    HttpRequestReader r;
    CHECK(r.feed(many) == HttpRequestReader::State::Done);
    CHECK(r.status() == 431);
    CHECK(byte_by_byte(many.substr(0, 3000)).status == 431);  // decided at header 65, long before the end

    HttpRequestLimits limits;
    CHECK(whole("GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'v') + "\r\n\r\n", limits).status == 431);
    // A field name cut into many pieces is one header, not many.
    HttpRequestReader pieces;
    pieces.feed("GET /metrics HTTP/1.1\r\n");
    for (int i = 0; i < 100; ++i) pieces.feed("X");
    CHECK(pieces.feed(": 1\r\n\r\n") == HttpRequestReader::State::Done);
    CHECK(pieces.status() == 200);
    // Exactly at the limit is fine.
    std::string at_limit = "GET /metrics HTTP/1.1\r\n";
    for (size_t i = 0; i < limits.max_headers; ++i) at_limit += "H" + std::to_string(i) + ": v\r\n";
    CHECK(whole(at_limit + "\r\n").status == 200);
}

TEST_CASE("http response: status line, length, close; HEAD has no body") {
    auto r = http_response(200, "text/plain; version=0.0.4; charset=utf-8", "up 1\n", false);
    CHECK(r == "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 5\r\n"
               "Connection: close\r\n\r\nup 1\n");
    auto h = http_response(200, "text/plain", "up 1\n", true);
    CHECK(h.find("Content-Length: 5\r\n") != std::string::npos);
    CHECK(h.substr(h.size() - 4) == "\r\n\r\n");
    CHECK(http_response(405, "text/plain", "", false).find("Allow: GET, HEAD\r\n") != std::string::npos);
    CHECK(http_response(431, "text/plain", "", false).rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0) == 0);
}
