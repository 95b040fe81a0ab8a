#pragma once
// The relay's rewriting of the backend's EHLO reply on its way to the client: it removes
// the extensions a client must not see or use through the relay (XCLIENT and XFORWARD,
// whose commands the relay blocks; CHUNKING, since BDAT is blocked; STARTTLS when the
// relay blocks it or terminates TLS itself) and, when smtpscreen terminates STARTTLS,
// offers its own STARTTLS instead. Removing the final line makes the last kept line
// final, so the client never waits for more.
//
// The reply goes out line by line, keeping back only the last kept line: whether it must
// become the final "250 " line is known only when the next line arrives. So one reply
// line (at most max_line) is buffered, however long the reply; a longer line is judged
// by its first max_line octets and streamed, or dropped to its end.
//
// Pure: bytes in, bytes out; no I/O, no clock, no global state.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace smtpscreen {

class EhloRewriter {
public:
    struct Options {
        bool strip_starttls = false;   // remove the backend's STARTTLS
        size_t max_line = 4096;        // longest reply line kept whole (at least 64: the
                                       // keywords judged are at most 8 octets)
    };

    explicit EhloRewriter(Options options);

    // A new EHLO reply starts. offer_starttls: a positive reply gets our own STARTTLS.
    void begin(bool offer_starttls);
    // The next piece of the reply, never more than one line: `segment` ends at the line's
    // LF if `line_ends`; `head` is the line's first (up to) 4 octets, its code and
    // separator, as far as they have arrived; `final` is true for the end of the final
    // line. Appends what the client gets to `to_client`.
    void bytes(std::string_view segment, std::string_view head, bool line_ends, bool final, std::string& to_client);

private:
    // The tail of a line longer than max_line: streamed on, or dropped.
    enum class LongLine : uint8_t { None, Forward, Drop };

    void line_complete(std::string_view head, bool final, std::string& to_client);
    void begin_long_line(std::string_view head, std::string& to_client);
    void close_stripped_reply(std::string_view head, std::string& to_client);
    bool strip_line(std::string_view line) const;
    bool offers_starttls(std::string_view line) const;

    Options options_;
    bool offer_starttls_ = false;
    std::string line_;                           // current reply line, at most max_line
    std::string pending_;                        // last kept line, not yet sent (it may become final)
    bool first_line_ = true;
    LongLine long_line_ = LongLine::None;
    bool starttls_after_line_ = false;           // a streamed single-line reply gets our
                                                 // STARTTLS as its final line at its end
};

}  // namespace smtpscreen
