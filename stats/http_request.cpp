#include "stats/http_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>

namespace smtpscreen {

namespace {

// What a callback returns to make http_parser_execute stop at once (HPE_CB_*).
constexpr int kStop = 1;

HttpRequestReader& reader(http_parser* p) { return *static_cast<HttpRequestReader*>(p->data); }

constexpr size_t kStartKept = 16;

// An upper-case word up to the first space, as HTTP's methods are written (RFC 9110 9.1).
bool looks_like_method(std::string_view start) {
    std::string_view word = start.substr(0, start.find(' '));
    return !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
    });
}

}  // namespace

HttpRequestReader::HttpRequestReader(HttpRequestLimits limits) : limits_(limits) {
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_url = &HttpRequestReader::on_url;
    settings_.on_header_field = &HttpRequestReader::on_header_field;
    settings_.on_header_value = &HttpRequestReader::on_header_value;
    settings_.on_headers_complete = &HttpRequestReader::on_headers_complete;
}

int HttpRequestReader::refuse(int status, std::string why) {
    status_ = status;
    why_ = std::move(why);
    state_ = State::Done;
    return kStop;
}

// The URL arrives in pieces when the request is cut; only max_url of it is ever kept.
int HttpRequestReader::on_url(http_parser* p, const char* at, size_t length) {
    HttpRequestReader& r = reader(p);
    if (r.url_.size() + length > r.limits_.max_url) {
        return r.refuse(414, fmt::format("request target longer than {} octets", r.limits_.max_url));
    }
    r.url_.append(at, length);
    return 0;
}

int HttpRequestReader::count_header_bytes(size_t length) {
    header_bytes_ += length;
    if (header_bytes_ > limits_.max_header_bytes) {
        return refuse(431, fmt::format("header fields longer than {} octets in all", limits_.max_header_bytes));
    }
    return 0;
}

// A field name may arrive in several calls; a new header starts after a value.
int HttpRequestReader::on_header_field(http_parser* p, const char*, size_t length) {
    HttpRequestReader& r = reader(p);
    if (r.in_value_ || r.headers_ == 0) {
        r.in_value_ = false;
        if (++r.headers_ > r.limits_.max_headers) {
            return r.refuse(431, fmt::format("more than {} header fields", r.limits_.max_headers));
        }
    }
    return r.count_header_bytes(length);
}

int HttpRequestReader::on_header_value(http_parser* p, const char*, size_t length) {
    HttpRequestReader& r = reader(p);
    r.in_value_ = true;
    return r.count_header_bytes(length);
}

// The answer is known: the parser stops here, so a body or a pipelined request behind
// it is never read (returning 1 would not do: here it means "no body follows").
int HttpRequestReader::on_headers_complete(http_parser* p) {
    reader(p).decide();
    http_parser_pause(p, 1);
    return 0;
}

void HttpRequestReader::decide() {
    const auto method = static_cast<http_method>(parser_.method);
    if (method != HTTP_GET && method != HTTP_HEAD) {
        refuse(405, fmt::format("method {} (only GET and HEAD)", http_method_str(method)));
        return;
    }
    head_ = method == HTTP_HEAD;
    // http_parser sets content_length to ULLONG_MAX when the request has none.
    const bool body = (parser_.flags & F_CHUNKED) != 0 ||
                      (parser_.content_length != 0 && parser_.content_length != ULLONG_MAX);
    if (body) {
        refuse(413, "a request body (a scrape has none)");
        return;
    }
    std::string_view path = url_;
    path = path.substr(0, path.find_first_of("?#"));
    if (path != "/metrics") {
        refuse(404, "no such path (use /metrics)");
        return;
    }
    status_ = 200;
    state_ = State::Done;
}

HttpRequestReader::State HttpRequestReader::feed(std::string_view bytes) {
    // One octet per call: http_parser hands a URL or header piece to its callback only at
    // the end of each call, so the limits here, and which of two faults is met first,
    // would otherwise depend on how the scraper's bytes were cut. A request is a few
    // hundred octets and the whole is bounded below, so the calls cost nothing.
    for (size_t i = 0; i < bytes.size() && state_ == State::NeedMore; ++i) {
        if (start_.size() < kStartKept) start_.push_back(bytes[i]);
        const size_t used = http_parser_execute(&parser_, &settings_, bytes.data() + i, 1);
        ++fed_;
        if (state_ == State::Done) break;
        if (parser_.http_errno != HPE_OK || used != 1) {
            parser_failed(fed_ - 1);
            break;
        }
        // http_parser skips empty lines before a request and white space in values
        // without a callback: the request as a whole is bounded too.
        if (fed_ > limits_.max_request_bytes) {
            refuse(431, fmt::format("request head longer than {} octets", limits_.max_request_bytes));
        }
    }
    return state_;
}

void HttpRequestReader::parser_failed(size_t failed_at) {
    const auto err = static_cast<http_errno>(parser_.http_errno);
    switch (err) {
    case HPE_INVALID_METHOD:
        // Only the octets up to the one refused, so that the answer does not depend on
        // how the request was cut.
        if (looks_like_method(std::string_view(start_).substr(0, failed_at + 1))) {
            refuse(405, "unknown method (only GET and HEAD)");
        } else {
            refuse(400, "not an HTTP request");
        }
        break;
    case HPE_HEADER_OVERFLOW: refuse(431, "header section too large"); break;
    default: refuse(400, fmt::format("malformed request ({})", http_errno_description(err))); break;
    }
}

std::string_view http_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

std::string http_response(int status, std::string_view content_type, std::string_view body, bool head) {
    std::string out = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n", status,
        http_reason(status), content_type, body.size(), status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!head) out.append(body);
    return out;
}

}  // namespace smtpscreen
