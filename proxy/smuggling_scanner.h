#pragma once
// The relay's data phase: message content on its way from the client to the backend,
// after the backend's 354 and up to the client's end of data (RFC 5321 §4.1.1.4).
//
// SMTP smuggling (SEC Consult 2023; Postfix smtpd_forbid_bare_newline): the client's end
// of data is only <CR><LF>.<CR><LF> (the start of the data phase counts as a line start).
// A backend that also took a bare LF or a bare CR (a CR not followed by LF) as a line
// end would see an end of data, and a second, smuggled message or command after it,
// where the client's message goes on. So no bare LF or bare CR ever reaches the backend:
//   - BareLf::Reject (default): the first bare LF or bare CR refuses the message; nothing
//     more of it goes to the backend (what went before it is plain CRLF text without an
//     end of data), and the scanner only looks for the client's real end of data, where
//     the relay answers the client itself (refusal_replies()) and abandons the backend.
//   - BareLf::Normalize: each bare LF and each bare CR goes to the backend as CRLF. A "."
//     line is the end of data only when the client sent <CR><LF>.<CR><LF>; a line that
//     begins with "." after a bare line end is dot-stuffed ("..") on the way, and so is a
//     "." line that a bare line end closes, so normalizing never creates an end of data.
// Either way a text line over max_text_line octets (RFC 5321 §4.5.3.1.6) refuses the
// message as in Reject. The scan is streamed: besides a held trailing CR it keeps only a
// few state variables, whatever the message size.
//
// Pure: bytes in, bytes out; no I/O, no clock, no global state.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace smtpscreen {

// smuggling.bare_lf: what a bare LF or CR in relayed DATA does (see above).
enum class BareLf { Reject, Normalize };
inline constexpr std::array<std::pair<std::string_view, BareLf>, 2> kBareLfNames{{
    {"reject", BareLf::Reject}, {"normalize", BareLf::Normalize}}};

class SmugglingScanner {
public:
    struct Options {
        BareLf bare_lf = BareLf::Reject;   // smuggling.bare_lf (conf/smtpscreen.ini)
        size_t max_text_line = 1000;       // longest message line in octets, CRLF included
                                           // (RFC 5321 §4.5.3.1.6); 0 = no limit
    };

    // Why a message was refused.
    enum class Refusal : uint8_t { None, BareLf, BareCr, LongLine };

    explicit SmugglingScanner(Options options);

    // A new message starts (the backend answered 354): the first octet is at a line start.
    void begin();
    // Message content from the client. Appends what goes to the backend to `to_backend`
    // and returns the offset just past the client's end of data if `in` contains it (the
    // end of data itself is forwarded too, unless the message was refused). Once refused,
    // nothing more is appended; the scan goes on only to find the end of data.
    std::optional<size_t> scan(std::string_view in, std::string& to_backend);

    Refusal refusal() const { return refusal_; }
    // A CR at the end of the last input, not forwarded until the next octet shows whether
    // it is part of a CRLF.
    bool holds_cr() const { return pending_cr_; }

private:
    enum class ClientView : uint8_t { LineStart, InLine, Cr, Dot, DotCr };

    std::optional<size_t> forward(std::string_view in, std::string& to_backend);
    std::optional<size_t> find_end(std::string_view in);
    void refuse(Refusal why);
    void new_line(bool bare);

    Options options_;
    size_t text_limit_;                          // longest line without its CRLF
    // client_view_ follows the client's own view of the stream (only CRLF ends a line)
    // and finds its real end of data once a message is refused; until then the fields
    // below follow the backend's view of what is forwarded.
    ClientView client_view_ = ClientView::LineStart;
    Refusal refusal_ = Refusal::None;
    bool pending_cr_ = false;                    // a CR at the end of the last input, not yet sent
    bool line_start_ = true;                     // nothing of the current line seen yet
    bool bare_start_ = false;                    // the current line follows a bare line end (Normalize)
    bool dot_line_ = false;                      // the line so far is the client's lone "." at a real line start
    size_t text_line_ = 0;                       // octets of the current line so far
};

// What the relay answers a refused message at the client's real end of data: the 550
// and the 421 that closes the session (the backend is mid-DATA and can only be
// abandoned). Empty for Refusal::None.
std::string_view refusal_replies(SmugglingScanner::Refusal why);

}  // namespace smtpscreen
