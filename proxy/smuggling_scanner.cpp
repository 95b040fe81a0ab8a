#include "proxy/smuggling_scanner.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstdint>

namespace smtpscreen {

namespace {

// Where the next CR or LF is in [p, p + n), or n: the data phase's inner loop, which
// scans every octet of every message. One pass for both octets, 16 at a time, instead
// of a memchr for each (the two memchr calls were a third of a 10 MB relay's CPU).
size_t find_cr_or_lf(const char* p, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i lf = _mm_set1_epi8('\n');
    for (; i + 16 <= n; i += 16) {
        __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(chunk, cr), _mm_cmpeq_epi8(chunk, lf));
        if (int mask = _mm_movemask_epi8(hit)) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
    }
#endif
    for (; i < n; ++i) {
        if (p[i] == '\r' || p[i] == '\n') return i;
    }
    return n;
}

// The line end that a bare LF or bare CR becomes in Normalize mode, and the same after a
// lone "." at a real line start: the extra dot stuffs it, so it is never an end of data.
constexpr std::string_view kCrLf = "\r\n";
constexpr std::string_view kStuffedDotCrLf = ".\r\n";

}  // namespace

std::string_view refusal_replies(SmugglingScanner::Refusal why) {
    switch (why) {
    case SmugglingScanner::Refusal::BareLf:
        return "550 5.5.2 Message contains bare <LF>\r\n421 4.7.0 Connection closed after bare <LF>\r\n";
    case SmugglingScanner::Refusal::BareCr:
        return "550 5.5.2 Message contains bare <CR>\r\n421 4.7.0 Connection closed after bare <CR>\r\n";
    case SmugglingScanner::Refusal::LongLine:
        return "550 5.5.2 Message line too long\r\n421 4.7.0 Connection closed after message line too long\r\n";
    case SmugglingScanner::Refusal::None:
        break;
    }
    return {};
}

SmugglingScanner::SmugglingScanner(Options options) : options_(options) {
    // The text of a line, without its CRLF; at least 1 so that the "." line fits.
    text_limit_ = options_.max_text_line == 0 ? SIZE_MAX : std::max<size_t>(options_.max_text_line, 3) - 2;
}

void SmugglingScanner::begin() {
    client_view_ = ClientView::LineStart;
    refusal_ = Refusal::None;
    pending_cr_ = false;
    line_start_ = true;
    bare_start_ = false;
    dot_line_ = false;
    text_line_ = 0;
}

std::optional<size_t> SmugglingScanner::scan(std::string_view in, std::string& to_backend) {
    return refusal_ == Refusal::None ? forward(in, to_backend) : find_end(in);
}

// Forwards `in` to the backend as CRLF text in which only the client's own
// <CR><LF>.<CR><LF> is an end of data, and returns the offset just past that end if `in`
// contains it. Runs of ordinary text go out in one append.
std::optional<size_t> SmugglingScanner::forward(std::string_view in, std::string& to_backend) {
    const size_t n = in.size();
    const bool normalize = options_.bare_lf == BareLf::Normalize;
    size_t i = 0;
    size_t run = 0;   // start of the input octets that go out unchanged and are not appended yet
    auto flush = [&](size_t upto) {
        to_backend.append(in.substr(run, upto - run));
        run = upto;
    };
    // The message is refused at in[at]: what went before goes out, nothing after it does,
    // and the rest only matters for where the client's end of data is.
    auto refused = [&](Refusal why, size_t at) -> std::optional<size_t> {
        flush(at);
        refuse(why);
        std::optional<size_t> end = find_end(in.substr(at));
        return end ? std::optional<size_t>(at + *end) : std::nullopt;
    };
    // A bare LF or bare CR (Normalize): CRLF to the backend, and the next line is no line
    // start for the client.
    auto bare_line_end = [&](size_t at, size_t resume) {
        flush(at);
        to_backend.append(dot_line_ ? kStuffedDotCrLf : kCrLf);
        run = i = resume;
        new_line(true);
    };

    if (pending_cr_) {
        // The CR that ended the previous input.
        if (in[0] == '\n') {
            pending_cr_ = false;
            to_backend.append(kCrLf);
            run = i = 1;
            if (dot_line_) return 1;
            new_line(false);
        } else if (!normalize) {
            return refused(Refusal::BareCr, 0);
        } else {
            pending_cr_ = false;
            bare_line_end(0, 0);
        }
    }

    while (i < n) {
        char c = in[i];
        if (c == '\r') {
            if (i + 1 == n) {
                // A CR goes out only with what follows it: a CRLF, or (Normalize) the CRLF
                // a bare CR becomes.
                flush(i);
                run = n;
                pending_cr_ = true;
                return std::nullopt;
            }
            if (in[i + 1] == '\n') {
                i += 2;
                if (dot_line_) {   // <CR><LF>.<CR><LF>: the client's end of data
                    flush(i);
                    return i;
                }
                new_line(false);
                continue;
            }
            if (!normalize) return refused(Refusal::BareCr, i);
            bare_line_end(i, i + 1);
            continue;
        }
        if (c == '\n') {
            if (!normalize) return refused(Refusal::BareLf, i);
            bare_line_end(i, i + 1);
            continue;
        }
        if (line_start_ && c == '.') {
            if (bare_start_) {
                // Not a line start for the client, so a literal dot; the backend would take
                // it for dot-stuffing, or for the end of data: stuff it.
                flush(i);
                to_backend.push_back('.');
            } else {
                dot_line_ = true;   // the client's own stuffing, or its end of data
            }
            line_start_ = false;
            text_line_ = 1;
            ++i;
            continue;
        }
        // Ordinary text up to the next CR or LF.
        size_t stop = i + find_cr_or_lf(in.data() + i, n - i);
        size_t room = text_limit_ - text_line_;
        if (stop - i > room) {
            // The octet past the limit is ordinary text: for the client, mid-line.
            line_start_ = false;
            dot_line_ = false;
            text_line_ = text_limit_;
            return refused(Refusal::LongLine, i + room);
        }
        line_start_ = false;
        dot_line_ = false;
        text_line_ += stop - i;
        i = stop;
    }
    flush(n);
    return std::nullopt;
}

void SmugglingScanner::new_line(bool bare) {
    line_start_ = true;
    bare_start_ = bare;
    dot_line_ = false;
    text_line_ = 0;
}

// From the octet where the message is refused, find_end() follows the client's view of
// the stream; it starts from where the forwarding state says the client is.
void SmugglingScanner::refuse(Refusal why) {
    refusal_ = why;
    if (pending_cr_)
        client_view_ = dot_line_ ? ClientView::DotCr : ClientView::Cr;
    else if (dot_line_)
        client_view_ = ClientView::Dot;
    else if (line_start_ && !bare_start_)
        client_view_ = ClientView::LineStart;
    else
        client_view_ = ClientView::InLine;
    pending_cr_ = false;
}

// The client's own view of where message content ends: exactly <CR><LF>.<CR><LF> (the data
// phase starts at a line start, so a first line of "." ends it too); a bare LF or bare CR
// ends no line. Used once a message is refused. Returns the offset just past the end of
// data, if `in` contains it.
std::optional<size_t> SmugglingScanner::find_end(std::string_view in) {
    for (size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        switch (client_view_) {
        case ClientView::LineStart:
            client_view_ = c == '.' ? ClientView::Dot : c == '\r' ? ClientView::Cr : ClientView::InLine;
            break;
        case ClientView::InLine:
            client_view_ = c == '\r' ? ClientView::Cr : ClientView::InLine;
            break;
        case ClientView::Cr:
            client_view_ = c == '\n' ? ClientView::LineStart : c == '\r' ? ClientView::Cr : ClientView::InLine;
            break;
        case ClientView::Dot:
            client_view_ = c == '\r' ? ClientView::DotCr : ClientView::InLine;
            break;
        case ClientView::DotCr:
            if (c == '\n') {
                client_view_ = ClientView::LineStart;
                return i + 1;
            }
            client_view_ = c == '\r' ? ClientView::Cr : ClientView::InLine;
            break;
        }
    }
    return std::nullopt;
}

}  // namespace smtpscreen
