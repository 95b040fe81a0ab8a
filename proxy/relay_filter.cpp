#include "proxy/relay_filter.h"

#include <algorithm>
#include <cctype>

namespace smtpscreen {

namespace {

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

}  // namespace

RelayFilter::RelayFilter(Options options) : options_(options) {
    options_.max_line = std::max(options_.max_line, kMinLine);
}

// ---------------------------------------------------------------------------------
// Client -> backend

void RelayFilter::from_client(std::string_view in, std::string& to_backend) {
    while (!in.empty()) {
        switch (phase_) {
        case Phase::Transparent:
            to_backend.append(in);
            return;
        case Phase::Held:
            held_.append(in);
            return;
        case Phase::Data: {
            std::optional<size_t> end = end_of_data(in);
            size_t take = end.value_or(in.size());
            to_backend.append(in.substr(0, take));
            in.remove_prefix(take);
            if (end) {
                // The final "." is a command of its own as far as replies go: the backend
                // answers it with the message's fate (RFC 5321 §4.1.1.4).
                phase_ = Phase::Command;
                awaiting_.push_back(Awaits::Other);
            }
            break;
        }
        case Phase::Command:
            in.remove_prefix(command_bytes(in, to_backend));
            break;
        }
    }
}

// Splits command-phase bytes into lines (CRLF or bare LF: the backend accepts both as a
// line end) and forwards them; stops early when a DATA/STARTTLS starts a hold. Returns
// the bytes consumed.
size_t RelayFilter::command_bytes(std::string_view in, std::string& to_backend) {
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
                    command_forwarded(awaits);
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
            command_forwarded(long_command_awaits_);
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
    } else {
        long_command_awaits_ = forward_command(line_, to_backend);
        long_command_ = LongLine::Forward;
    }
    line_.clear();
}

RelayFilter::Awaits RelayFilter::forward_command(std::string_view line, std::string& to_backend) const {
    switch (classify(line)) {
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
    case Verb::Other:
        break;
    }
    to_backend.append(line);
    return Awaits::Other;
}

// Called once the whole line (with its end) has been forwarded.
void RelayFilter::command_forwarded(Awaits awaits) {
    awaiting_.push_back(awaits);
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
    if (iequals(verb, "STARTTLS")) return options_.strip_starttls ? Verb::Blocked : Verb::StartTls;
    if (iequals(verb, "EHLO")) return Verb::Ehlo;
    if (iequals(verb, "DATA")) return Verb::Data;
    return Verb::Other;
}

// Extension point for SMTP smuggling (SPEC §4): this is the only place that decides
// where message content ends. It accepts exactly <CR><LF>.<CR><LF> (the data phase
// starts at a line start, so a first line of "." ends it too); the bare-LF rules will
// go here. Returns the offset just past the end of data, if `in` contains it.
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

void RelayFilter::release_held(std::string& to_backend) {
    std::string held;
    held.swap(held_);
    from_client(held, to_backend);
}

// ---------------------------------------------------------------------------------
// Backend -> client

void RelayFilter::from_backend(std::string_view in, std::string& to_client, std::string& to_backend) {
    while (!in.empty()) {
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
            if (final) reply_complete(code, to_backend);
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

void RelayFilter::reply_complete(std::string_view code, std::string& to_backend) {
    Awaits awaits = reply_awaits_;
    if (reply_counted_) awaiting_.pop_front();
    in_reply_ = false;
    ehlo_first_line_ = true;

    if (awaits == Awaits::Data) {
        if (code == "354") {
            phase_ = Phase::Data;
            data_scan_ = DataScan::LineStart;
        } else {
            phase_ = Phase::Command;
        }
        release_held(to_backend);
    } else if (awaits == Awaits::StartTls) {
        if (code == "220") {
            // RFC 3207 §4.2 / CVE-2011-0411: bytes sent after STARTTLS and before the
            // handshake are plain text that a man in the middle may have injected into
            // what will look like the TLS session. Discard them.
            phase_ = Phase::Transparent;
            held_.clear();
        } else {
            phase_ = Phase::Command;
            release_held(to_backend);
        }
    }
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
        if (final)
            to_client.append(ehlo_line_);
        else
            ehlo_pending_ = ehlo_line_;
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
// blocked (see classify); STARTTLS goes when we block it. The first line is the
// server's name, never a keyword, and only a positive reply lists extensions.
bool RelayFilter::strip_ehlo_line(std::string_view line) const {
    if (ehlo_first_line_ || line.size() < 4 || line[0] != '2') return false;
    std::string_view keyword = first_word(line.substr(4));
    return iequals(keyword, "XCLIENT") || iequals(keyword, "XFORWARD") || iequals(keyword, "CHUNKING") ||
           (options_.strip_starttls && iequals(keyword, "STARTTLS"));
}

}  // namespace smtpscreen
