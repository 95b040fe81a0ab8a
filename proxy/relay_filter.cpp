#include "proxy/relay_filter.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cctype>

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

// Verbs and EHLO keywords this filter acts on are at most 8 octets; a line prefix
// shorter than this could hide "XCLIENT " from the verb check.
constexpr size_t kMinLine = 64;

// A blocked command is *rewritten* to a verb no MTA knows rather than dropped: the backend
// answers it (502), so every command the client sent still gets exactly one reply, in
// order. Dropping it would desynchronize a pipelined group (RFC 2920): the client would
// take the reply to its next command for the reply to the blocked one.
constexpr std::string_view kBlockedCommand = "XSMTPSCREEN-BLOCKED\r\n";

// The final line we send when every line after an already-streamed over-long EHLO line
// was stripped (see close_stripped_ehlo_reply). RFC 5321 §4.1.1.1: keywords starting
// with "X" are local extensions, which clients ignore.
constexpr std::string_view kEhloFiller = " XSMTPSCREEN\r\n";

// The line end that a bare LF or bare CR becomes in Normalize mode, and the same after a
// lone "." at a real line start: the extra dot stuffs it, so it is never an end of data.
constexpr std::string_view kCrLf = "\r\n";
constexpr std::string_view kStuffedDotCrLf = ".\r\n";

// The filter's own replies with terminate_starttls (the wording is Postfix's smtpd).
constexpr std::string_view kReadyToStartTls = "220 2.0.0 Ready to start TLS\r\n";
constexpr std::string_view kStartTlsSyntax = "501 5.5.4 Syntax: STARTTLS\r\n";
constexpr std::string_view kTlsAlreadyActive = "554 5.5.1 Error: TLS already active\r\n";

// What the filter answers a refused message at the client's real end of data (SPEC §4),
// and the 421 that closes the session: the backend is mid-DATA and can only be abandoned.
std::string_view refusal_replies(RelayFilter::Refusal why) {
    switch (why) {
    case RelayFilter::Refusal::BareLf:
        return "550 5.5.2 Message contains bare <LF>\r\n421 4.7.0 Connection closed after bare <LF>\r\n";
    case RelayFilter::Refusal::BareCr:
        return "550 5.5.2 Message contains bare <CR>\r\n421 4.7.0 Connection closed after bare <CR>\r\n";
    case RelayFilter::Refusal::LongLine:
        return "550 5.5.2 Message line too long\r\n421 4.7.0 Connection closed after message line too long\r\n";
    case RelayFilter::Refusal::None:
        break;
    }
    return {};
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
           });
}

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

// Postfix's smtpd_token() skips leading white space and the backend looks the verb up
// case-insensitively, so " xclient ADDR=..." is XCLIENT to it. Ending the verb at any
// octet that cannot be part of a verb (':', '<', NUL, ...) errs on the side of treating
// an odd line as the command it starts with: such a line is at worst blocked or held,
// never let through as something the backend would read differently.
std::string_view first_word(std::string_view line) {
    size_t start = 0;
    while (start < line.size() && is_space(line[start])) ++start;
    size_t end = start;
    while (end < line.size()) {
        unsigned char c = static_cast<unsigned char>(line[end]);
        if (!std::isalnum(c) && c != '-' && c != '_') break;
        ++end;
    }
    return line.substr(start, end - start);
}

// A reply line is final unless its fourth octet is '-' (RFC 5321 §4.2.1); "250\r\n"
// alone is a complete final line too.
bool is_final_line(std::string_view head) { return head.size() < 4 || head[3] != '-'; }

// Makes a complete final reply line a continuation line: "250 mx" -> "250-mx",
// "250\r\n" -> "250-\r\n".
void make_continued(std::string& line) {
    if (line.size() >= 4 && line[3] == ' ')
        line[3] = '-';
    else
        line.insert(std::min<size_t>(3, line.size()), 1, '-');
}

// The STARTTLS line we add to a positive EHLO reply, with the reply's own code.
std::string starttls_line(std::string_view head, bool final) {
    std::string line(head.substr(0, 3));
    line += final ? " STARTTLS\r\n" : "-STARTTLS\r\n";
    return line;
}

// RFC 3207: STARTTLS takes no argument; Postfix's tokenizer ignores white space around it.
bool has_argument(std::string_view line, std::string_view verb) {
    std::string_view rest = line.substr(static_cast<size_t>(verb.data() - line.data()) + verb.size());
    return !std::all_of(rest.begin(), rest.end(), is_space);
}

}  // namespace

RelayFilter::RelayFilter(Options options) : options_(options), tls_active_(options.tls_already_active) {
    options_.max_line = std::max(options_.max_line, kMinLine);
    // The text of a line, without its CRLF; at least 1 so that the "." line fits.
    text_limit_ = options_.max_text_line == 0 ? SIZE_MAX : std::max<size_t>(options_.max_text_line, 3) - 2;
}

// ---------------------------------------------------------------------------------
// Client -> backend

void RelayFilter::from_client(std::string_view in, std::string& to_backend, std::string& to_client) {
    if (!backend_stash_.empty() && phase_ == Phase::Command) flush_backend_stash(to_client, to_backend);
    while (!in.empty()) {
        switch (phase_) {
        case Phase::Transparent:
            to_backend.append(in);
            return;
        case Phase::Held:
            held_.append(in);
            return;
        case Phase::Refused:
            return;
        case Phase::TlsWaiting:
        case Phase::TlsStarting:
            // RFC 3207 §4.2 / CVE-2011-0411: what the client sent after STARTTLS and before
            // the handshake is plain text that a man in the middle may have injected into
            // what will look like the TLS session.
            discarded_after_starttls_ += in.size();
            return;
        case Phase::Data: {
            std::optional<size_t> end = refusal_ == Refusal::None ? data_bytes(in, to_backend) : end_of_data(in);
            if (!end) return;
            in.remove_prefix(*end);
            if (refusal_ != Refusal::None) {
                // No reply from the backend is owed: the client had to wait for the 354,
                // which answered its last command. Whatever it sent after its end of data
                // is never read (abandon_backend()).
                phase_ = Phase::Refused;
                to_client.append(refusal_replies(refusal_));
                return;
            }
            // The final "." is a command of its own as far as replies go: the backend
            // answers it with the message's fate (RFC 5321 §4.1.1.4).
            phase_ = Phase::Command;
            awaiting_.push_back(Awaits::Other);
            break;
        }
        case Phase::Command:
            in.remove_prefix(command_bytes(in, to_backend, to_client));
            break;
        }
    }
}

// Splits command-phase bytes into lines (CRLF or bare LF: the backend accepts both as a
// line end) and forwards them; stops early when a DATA/STARTTLS starts a hold. Returns
// the bytes consumed.
size_t RelayFilter::command_bytes(std::string_view in, std::string& to_backend, std::string& to_client) {
    size_t used = 0;
    while (used < in.size() && phase_ == Phase::Command) {
        std::string_view rest = in.substr(used);
        size_t lf = rest.find('\n');
        size_t take = lf == std::string_view::npos ? rest.size() : lf + 1;
        bool line_ends = lf != std::string_view::npos;

        if (long_command_ == LongLine::None) {
            size_t room = options_.max_line - line_.size();
            if (take <= room) {
                line_.append(rest.substr(0, take));
                used += take;
                if (line_ends) {
                    Awaits awaits = forward_command(line_, to_backend);
                    line_.clear();
                    command_forwarded(awaits, to_backend, to_client);
                }
                continue;
            }
            line_.append(rest.substr(0, room));
            used += room;
            begin_long_command(to_backend);
            continue;
        }
        if (long_command_ == LongLine::Forward) to_backend.append(rest.substr(0, take));
        used += take;
        if (line_ends) {
            long_command_ = LongLine::None;
            command_forwarded(long_command_awaits_, to_backend, to_client);
        }
    }
    return used;
}

// A command line longer than max_line is judged by its first max_line octets and its
// tail streamed, so memory stays bounded. That is only safe because the backend does
// the same: Postfix's smtpd_chat_query() skips the rest of an over-long line "to avoid
// loss of synchronization", so the tail can never become a command of its own.
void RelayFilter::begin_long_command(std::string& to_backend) {
    Verb verb = classify(line_);
    if (verb == Verb::Blocked) {
        to_backend.append(kBlockedCommand);
        long_command_ = LongLine::Drop;
        long_command_awaits_ = Awaits::Other;
    } else if (verb == Verb::LocalStartTls) {
        // A STARTTLS line over max_line octets has an argument (or absurd white space).
        long_command_ = LongLine::Drop;
        long_command_awaits_ = Awaits::LocalSyntax;
    } else {
        long_command_awaits_ = forward_command(line_, to_backend);
        long_command_ = LongLine::Forward;
    }
    line_.clear();
}

RelayFilter::Awaits RelayFilter::forward_command(std::string_view line, std::string& to_backend) const {
    switch (classify(line)) {
    case Verb::LocalStartTls:
        // Never forwarded: answered by the filter (in order, see command_forwarded).
        // Postfix's order of checks: syntax first, then TLS already active.
        if (has_argument(line, first_word(line))) return Awaits::LocalSyntax;
        return tls_active_ ? Awaits::LocalTlsActive : Awaits::LocalStartTls;
    case Verb::Blocked:
        to_backend.append(kBlockedCommand);
        return Awaits::Other;
    case Verb::Ehlo:
        to_backend.append(line);
        return Awaits::Ehlo;
    case Verb::Data:
        to_backend.append(line);
        return Awaits::Data;
    case Verb::StartTls:
        to_backend.append(line);
        return Awaits::StartTls;
    case Verb::Quit:
        to_backend.append(line);
        return Awaits::Quit;
    case Verb::Other:
        break;
    }
    to_backend.append(line);
    return Awaits::Other;
}

// Called once the whole line (with its end) has been forwarded (or, for the Local*
// entries, taken in to be answered by the filter).
void RelayFilter::command_forwarded(Awaits awaits, std::string& to_backend, std::string& to_client) {
    awaiting_.push_back(awaits);
    switch (awaits) {
    case Awaits::LocalStartTls:
        // Nothing after STARTTLS is a command (RFC 3207 §4: it must be the last command of
        // a pipelined group); the 220 goes out once the replies owed before it have.
        phase_ = Phase::TlsWaiting;
        emit_local_replies(to_backend, to_client);
        return;
    case Awaits::LocalSyntax:
    case Awaits::LocalTlsActive:
        emit_local_replies(to_backend, to_client);
        // Still queued behind backend replies: hold what follows until it goes out, so the
        // queue of our own replies cannot grow while the backend is silent.
        if (!awaiting_.empty()) phase_ = Phase::Held;
        return;
    default:
        break;
    }
    // RFC 5321 §4.1.1.4: what follows DATA is message content only if the server
    // answers 354; otherwise it is more commands. RFC 3207: what follows STARTTLS is a
    // TLS handshake only if the server answers 220. Only the backend's reply tells, so
    // nothing more of the client goes through until it arrives: forwarding the bytes
    // early would let a client pass "XCLIENT ..." off as message content to us while
    // the backend, having refused DATA, reads it as a command.
    if (awaits == Awaits::Data || awaits == Awaits::StartTls) phase_ = Phase::Held;
}

RelayFilter::Verb RelayFilter::classify(std::string_view line) const {
    std::string_view verb = first_word(line);
    // XCLIENT/XFORWARD: the relay hole this filter exists for (SPEC §4). BDAT: we strip
    // CHUNKING, so BDAT is never legitimate, and letting it through would make its
    // binary chunk message content to the backend but command lines to us. PROXY: a
    // header is the load balancer's to send, never the client's (SPEC §4).
    if (iequals(verb, "XCLIENT") || iequals(verb, "XFORWARD") || iequals(verb, "BDAT") ||
        iequals(verb, "PROXY"))
        return Verb::Blocked;
    if (iequals(verb, "STARTTLS")) {
        if (options_.terminate_starttls) return Verb::LocalStartTls;
        return options_.strip_starttls ? Verb::Blocked : Verb::StartTls;
    }
    if (iequals(verb, "EHLO")) return Verb::Ehlo;
    if (iequals(verb, "DATA")) return Verb::Data;
    if (iequals(verb, "QUIT")) return Verb::Quit;
    return Verb::Other;
}

void RelayFilter::begin_data() {
    phase_ = Phase::Data;
    data_scan_ = DataScan::LineStart;
    refusal_ = Refusal::None;
    pending_cr_ = false;
    line_start_ = true;
    bare_start_ = false;
    dot_line_ = false;
    text_line_ = 0;
}

// Message content (SPEC §4, SMTP smuggling). Forwards `in` to the backend as CRLF text in
// which only the client's own <CR><LF>.<CR><LF> is an end of data, and returns the offset
// just past that end if `in` contains it. Runs of ordinary text go out in one append.
std::optional<size_t> RelayFilter::data_bytes(std::string_view in, std::string& to_backend) {
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
        std::optional<size_t> end = end_of_data(in.substr(at));
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

void RelayFilter::new_line(bool bare) {
    line_start_ = true;
    bare_start_ = bare;
    dot_line_ = false;
    text_line_ = 0;
}

// From the octet where the message is refused, end_of_data() follows the client's view
// of the stream; it starts from where the data phase's own state says the client is.
void RelayFilter::refuse(Refusal why) {
    refusal_ = why;
    if (pending_cr_)
        data_scan_ = dot_line_ ? DataScan::DotCr : DataScan::Cr;
    else if (dot_line_)
        data_scan_ = DataScan::Dot;
    else if (line_start_ && !bare_start_)
        data_scan_ = DataScan::LineStart;
    else
        data_scan_ = DataScan::InLine;
    pending_cr_ = false;
}

// The client's own view of where message content ends: exactly <CR><LF>.<CR><LF> (the data
// phase starts at a line start, so a first line of "." ends it too); a bare LF or bare CR
// ends no line. Used once a message is refused. Returns the offset just past the end of
// data, if `in` contains it.
std::optional<size_t> RelayFilter::end_of_data(std::string_view in) {
    for (size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        switch (data_scan_) {
        case DataScan::LineStart:
            data_scan_ = c == '.' ? DataScan::Dot : c == '\r' ? DataScan::Cr : DataScan::InLine;
            break;
        case DataScan::InLine:
            data_scan_ = c == '\r' ? DataScan::Cr : DataScan::InLine;
            break;
        case DataScan::Cr:
            data_scan_ = c == '\n' ? DataScan::LineStart : c == '\r' ? DataScan::Cr : DataScan::InLine;
            break;
        case DataScan::Dot:
            data_scan_ = c == '\r' ? DataScan::DotCr : DataScan::InLine;
            break;
        case DataScan::DotCr:
            if (c == '\n') {
                data_scan_ = DataScan::LineStart;
                return i + 1;
            }
            data_scan_ = c == '\r' ? DataScan::Cr : DataScan::InLine;
            break;
        }
    }
    return std::nullopt;
}

void RelayFilter::release_held(std::string& to_backend, std::string& to_client) {
    std::string held;
    held.swap(held_);
    from_client(held, to_backend, to_client);
}

// ---------------------------------------------------------------------------------
// Backend -> client

void RelayFilter::from_backend(std::string_view in, std::string& to_client, std::string& to_backend) {
    if (!backend_stash_.empty() && phase_ != Phase::TlsStarting) flush_backend_stash(to_client, to_backend);
    while (!in.empty()) {
        // A refused message leaves nothing the backend says owed to the client.
        if (phase_ == Phase::Refused) return;
        if (phase_ == Phase::TlsStarting) {
            // Our 220 was the last plain text for the client, and nothing is owed: only an
            // unsolicited reply (a 421 before closing) can come. It waits for the TLS
            // session; a backend that says more than a line meanwhile loses the rest.
            size_t room = options_.max_line - std::min(options_.max_line, backend_stash_.size());
            backend_stash_.append(in.substr(0, room));
            return;
        }
        if (phase_ == Phase::Transparent) {
            to_client.append(in);
            return;
        }
        size_t lf = in.find('\n');
        bool line_ends = lf != std::string_view::npos;
        std::string_view segment = in.substr(0, line_ends ? lf + 1 : in.size());
        in.remove_prefix(segment.size());

        if (!in_reply_) start_reply();
        if (reply_head_.size() < 4) reply_head_.append(segment.substr(0, 4 - reply_head_.size()));
        bool final = line_ends && is_final_line(reply_head_);

        if (reply_awaits_ == Awaits::Ehlo) {
            ehlo_reply_bytes(segment, line_ends, final, to_client);
        } else {
            // Every other reply streams through untouched: only its code matters to us.
            to_client.append(segment);
        }
        if (line_ends) {
            std::string code = reply_head_.substr(0, 3);
            reply_head_.clear();
            if (final) reply_complete(code, to_client, to_backend);
        }
    }
}

// The first backend output the filter sees answers the client's first command (the
// proxy consumed the greeting); output with nothing awaiting it (a 421 before closing)
// is passed on without being counted.
void RelayFilter::start_reply() {
    in_reply_ = true;
    reply_counted_ = !awaiting_.empty();
    reply_awaits_ = reply_counted_ ? awaiting_.front() : Awaits::Other;
}

void RelayFilter::reply_complete(std::string_view code, std::string& to_client, std::string& to_backend) {
    Awaits awaits = reply_awaits_;
    if (reply_counted_) awaiting_.pop_front();
    in_reply_ = false;
    ehlo_first_line_ = true;

    if (awaits == Awaits::Quit && code == "221") quit_answered_ = true;
    if (awaits == Awaits::Data) {
        if (code == "354")
            begin_data();
        else
            phase_ = Phase::Command;
        release_held(to_backend, to_client);
    } else if (awaits == Awaits::StartTls) {
        if (code == "220") {
            // RFC 3207 §4.2 / CVE-2011-0411: bytes sent after STARTTLS and before the
            // handshake are plain text that a man in the middle may have injected into
            // what will look like the TLS session. Discard them.
            phase_ = Phase::Transparent;
            held_.clear();
        } else {
            phase_ = Phase::Command;
            release_held(to_backend, to_client);
        }
    }
    emit_local_replies(to_backend, to_client);
}

// Sends the filter's own replies that are next in line: nothing owed before them, and no
// backend reply half-way out (not even an unsolicited one). When the last of them goes out
// the client bytes held behind it are released; a STARTTLS among them ends the loop.
void RelayFilter::emit_local_replies(std::string& to_backend, std::string& to_client) {
    while (!in_reply_ && !awaiting_.empty() && phase_ != Phase::TlsStarting) {
        Awaits awaits = awaiting_.front();
        if (awaits == Awaits::LocalStartTls) {
            awaiting_.pop_front();
            to_client.append(kReadyToStartTls);
            phase_ = Phase::TlsStarting;   // nothing was taken in after the STARTTLS
            return;
        }
        if (awaits != Awaits::LocalSyntax && awaits != Awaits::LocalTlsActive) return;
        awaiting_.pop_front();
        to_client.append(awaits == Awaits::LocalSyntax ? kStartTlsSyntax : kTlsAlreadyActive);
        // A hold with nothing left owed is this reply's (a DATA's hold keeps its own entry
        // in awaiting_ until its reply).
        if (awaiting_.empty() && phase_ == Phase::Held) {
            phase_ = Phase::Command;
            release_held(to_backend, to_client);
        }
    }
}

void RelayFilter::tls_established() {
    if (phase_ != Phase::TlsStarting) return;
    phase_ = Phase::Command;
    tls_active_ = true;
}

void RelayFilter::flush_backend_stash(std::string& to_client, std::string& to_backend) {
    std::string stash;
    stash.swap(backend_stash_);
    from_backend(stash, to_client, to_backend);
}

// The EHLO reply goes line by line, keeping back only the last kept line: whether it
// must become the final "250 " line is known only when the next line arrives. So one
// reply line (at most max_line) is buffered, however long the reply.
void RelayFilter::ehlo_reply_bytes(std::string_view segment, bool line_ends, bool final, std::string& to_client) {
    if (long_reply_ == LongLine::None) {
        size_t room = options_.max_line - ehlo_line_.size();
        if (segment.size() <= room) {
            ehlo_line_.append(segment);
            if (line_ends) ehlo_line_complete(final, to_client);
            return;
        }
        ehlo_line_.append(segment.substr(0, room));
        segment.remove_prefix(room);
        begin_long_ehlo_line(to_client);
    }
    if (long_reply_ == LongLine::Forward) to_client.append(segment);
    if (line_ends) {
        if (long_reply_ == LongLine::Drop && final) close_stripped_ehlo_reply(to_client);
        if (starttls_after_line_) {
            to_client.append(starttls_line(reply_head_, true));
            starttls_after_line_ = false;
        }
        long_reply_ = LongLine::None;
        ehlo_first_line_ = false;
    }
}

void RelayFilter::ehlo_line_complete(bool final, std::string& to_client) {
    if (strip_ehlo_line(ehlo_line_)) {
        if (final) close_stripped_ehlo_reply(to_client);
    } else {
        to_client.append(ehlo_pending_);
        ehlo_pending_.clear();
        if (!final) {
            ehlo_pending_ = ehlo_line_;
        } else if (!offer_starttls(ehlo_line_)) {
            to_client.append(ehlo_line_);
        } else if (ehlo_first_line_) {
            // "250 mx.example.org": the first line is the server's name, so STARTTLS can
            // only follow it, as the new final line.
            make_continued(ehlo_line_);
            to_client.append(ehlo_line_);
            to_client.append(starttls_line(reply_head_, true));
        } else {
            to_client.append(starttls_line(reply_head_, false));
            to_client.append(ehlo_line_);
        }
    }
    ehlo_line_.clear();
    ehlo_first_line_ = false;
}

// An over-long EHLO line is judged by its first max_line octets. A kept one is sent at
// once (and with it the pending line, which a kept line now follows); a stripped one
// is dropped to its end.
void RelayFilter::begin_long_ehlo_line(std::string& to_client) {
    if (strip_ehlo_line(ehlo_line_)) {
        long_reply_ = LongLine::Drop;
    } else {
        to_client.append(ehlo_pending_);
        ehlo_pending_.clear();
        // The head of the line is known: max_line is at least 64.
        if (is_final_line(reply_head_) && offer_starttls(ehlo_line_)) {
            if (ehlo_first_line_) {
                make_continued(ehlo_line_);
                starttls_after_line_ = true;
            } else {
                to_client.append(starttls_line(reply_head_, false));
            }
        }
        to_client.append(ehlo_line_);
        long_reply_ = LongLine::Forward;
    }
    ehlo_line_.clear();
}

// The reply's final line was stripped: the last kept line becomes the final one
// ("250-PIPELINING" -> "250 PIPELINING"), or the client would wait for more lines.
// When that line already went out (it was over-long and streamed), a filler keyword
// closes the reply instead; that takes a backend with an EHLO line over max_line.
void RelayFilter::close_stripped_ehlo_reply(std::string& to_client) {
    if (offer_starttls(reply_head_)) {
        // Our STARTTLS becomes the final line; the last kept line stays a continuation.
        to_client.append(ehlo_pending_);
        ehlo_pending_.clear();
        to_client.append(starttls_line(reply_head_, true));
        return;
    }
    if (!ehlo_pending_.empty()) {
        ehlo_pending_[3] = ' ';   // pending lines are non-final: at least "ddd-"
        to_client.append(ehlo_pending_);
        ehlo_pending_.clear();
        return;
    }
    to_client.append(reply_head_.substr(0, 3));
    to_client.append(kEhloFiller);
}

// SPEC §4: the client must not learn of XCLIENT/XFORWARD; CHUNKING goes because BDAT is
// blocked (see classify); STARTTLS goes when we block it, or terminate it ourselves (then
// our own is added, see offer_starttls). The first line is the server's name, never a
// keyword, and only a positive reply lists extensions.
bool RelayFilter::strip_ehlo_line(std::string_view line) const {
    if (ehlo_first_line_ || line.size() < 4 || line[0] != '2') return false;
    std::string_view keyword = first_word(line.substr(4));
    return iequals(keyword, "XCLIENT") || iequals(keyword, "XFORWARD") || iequals(keyword, "CHUNKING") ||
           ((options_.strip_starttls || options_.terminate_starttls) && iequals(keyword, "STARTTLS"));
}

// terminate_starttls: a positive EHLO reply offers our STARTTLS (in place of the backend's,
// which strip_ehlo_line removes) until TLS is active. `line` starts with the reply code.
bool RelayFilter::offer_starttls(std::string_view line) const {
    return options_.terminate_starttls && !tls_active_ && !line.empty() && line[0] == '2';
}

}  // namespace smtpscreen
