#pragma once
// One scrape request on the metrics endpoint (smtpscreen(8), METRICS), read with
// http_parser (Debian's libhttp-parser-dev, Node's former parser): the parser judges
// HTTP's syntax, this class only keeps what it needs and bounds everything a scraper
// can make it hold. It does no I/O and reads no clock, so unit tests and a fuzzer can
// feed it bytes cut anywhere.
//
// The answer is decided as soon as the request line and headers are in: GET or HEAD
// of /metrics (a query string is ignored) is 200; another path is 404; another method
// 405; a request with a body 413; a URL over the limit 414; too many or too long
// headers, or a request head over its limit, 431; anything the parser refuses (a bogus Content-Length included) 400. A
// body is never read: every answer closes the connection.
#include <http_parser.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace smtpscreen {

struct HttpRequestLimits {
    size_t max_url = 1024;
    size_t max_headers = 64;
    size_t max_header_bytes = 8192;  // names and values together
    size_t max_request_bytes = 16384;  // everything before the end of the headers
};

class HttpRequestReader {
public:
    enum class State { NeedMore, Done };

    explicit HttpRequestReader(HttpRequestLimits limits = {});
    HttpRequestReader(const HttpRequestReader&) = delete;
    HttpRequestReader& operator=(const HttpRequestReader&) = delete;

    // Feeds the next bytes; once Done, more bytes change nothing.
    State feed(std::string_view bytes);
    State state() const { return state_; }
    // Once Done: the status to answer, and whether the request was a HEAD (no body sent).
    int status() const { return status_; }
    bool head() const { return head_; }
    // The request's target as far as it was kept (at most limits.max_url octets).
    const std::string& url() const { return url_; }
    // Why the status is not 200, for a log line; empty for 200.
    const std::string& why() const { return why_; }

private:
    static int on_url(http_parser* p, const char* at, size_t length);
    static int on_header_field(http_parser* p, const char* at, size_t length);
    static int on_header_value(http_parser* p, const char* at, size_t length);
    static int on_headers_complete(http_parser* p);
    int refuse(int status, std::string why);
    int count_header_bytes(size_t length);
    void decide();
    void parser_failed(size_t failed_at);

    HttpRequestLimits limits_;
    http_parser parser_{};
    http_parser_settings settings_{};
    State state_ = State::NeedMore;
    int status_ = 0;
    bool head_ = false;
    std::string url_;
    std::string why_;
    size_t headers_ = 0;
    size_t header_bytes_ = 0;
    bool in_value_ = false;
    // The request's first octets: http_parser refuses a method it does not know at its
    // first unknown letter, and whether that was a word (405) or not HTTP at all (400)
    // is read from them.
    std::string start_;
    size_t fed_ = 0;
};

// A whole HTTP/1.1 response that closes the connection. HEAD gets the headers only
// (Content-Length still says what GET would send).
std::string http_response(int status, std::string_view content_type, std::string_view body, bool head);
std::string_view http_reason(int status);

}  // namespace smtpscreen
