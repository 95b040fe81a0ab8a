#include "screen/command_reader.h"

#include <algorithm>

#include "core/text.h"

namespace smtpscreen {
namespace {

// RFC 5321 §4.5.3.1.4 counts the CRLF in the 512-octet command line limit (and
// §4.5.3.1.6 in the 1000-octet text line limit), so the text may hold two fewer.
// A bare LF line is measured the same way: the client owes us a CR anyway.
size_t text_limit(size_t max_line) { return max_line > 2 ? max_line - 2 : 1; }

}  // namespace

CommandReader::CommandReader(size_t max_line, size_t max_pending_lines)
    : max_line_(max_line), max_pending_(max_pending_lines) {}

void CommandReader::feed(std::string_view bytes) {
    const size_t limit = text_limit(max_line_);
    // Everything is appended through here so that the bound holds whatever the client
    // sends: a line longer than the limit keeps its first `limit` octets and drops the
    // rest up to its LF (a 10 MB line without LF costs `limit` bytes, not 10 MB).
    auto append_text = [&](std::string_view text) {
        const size_t room = limit - std::min(limit, partial_.size());
        if (text.size() > room) {
            partial_.append(text.substr(0, room));
            partial_too_long_ = true;
        } else {
            partial_.append(text);
        }
    };

    while (!bytes.empty()) {
        const size_t lf = bytes.find('\n');
        std::string_view piece = bytes.substr(0, lf);
        if (!piece.empty()) {
            // A CR held back from the previous piece was not followed by LF: it is an
            // ordinary byte of the line (a bare CR is not a line ending, RFC 5321 §2.3.8).
            if (partial_cr_) append_text("\r");
            partial_cr_ = piece.back() == '\r';
            if (partial_cr_) piece.remove_suffix(1);
            append_text(piece);
        }
        if (lf == std::string_view::npos) break;

        CommandLine line{std::move(partial_), !partial_cr_, partial_too_long_};
        partial_.clear();
        partial_too_long_ = false;
        partial_cr_ = false;
        if (lines_.size() < max_pending_) {
            lines_.push_back(std::move(line));
        } else {
            overflowed_ = true;
        }
        bytes.remove_prefix(lf + 1);
    }
}

std::optional<CommandLine> CommandReader::next() {
    if (lines_.empty()) return std::nullopt;
    CommandLine line = std::move(lines_.front());
    lines_.erase(lines_.begin());  // at most max_pending_lines move; the dialog keeps one
    return line;
}

bool CommandReader::has_partial() const { return !partial_.empty() || partial_too_long_ || partial_cr_; }

SmtpCommand parse_command(std::string_view line) {
    // The verb ends at a space or a colon, so that "MAIL FROM:" and HTTP-style header
    // lines ("Host: x", which postscreen's non-SMTP test looks for) both yield a verb.
    const size_t end = line.find_first_of(" :");
    SmtpCommand cmd;
    cmd.verb.reserve(std::min(end, line.size()));
    for (char c : line.substr(0, end)) cmd.verb.push_back(ascii_upper(c));
    if (end == std::string_view::npos) return cmd;
    // One separating space is consumed; a colon is kept so that "MAIL:<a>" stays
    // visibly malformed rather than turning into "MAIL <a>".
    cmd.args = std::string(line.substr(line[end] == ' ' ? end + 1 : end));
    return cmd;
}

std::optional<std::string> mail_address(std::string_view args, std::string_view keyword) {
    if (!keyword.empty() && keyword.back() == ':') keyword.remove_suffix(1);
    if (args.size() <= keyword.size() || !iequals(args.substr(0, keyword.size()), keyword) ||
        args[keyword.size()] != ':') {
        return std::nullopt;
    }
    std::string_view rest = args.substr(keyword.size() + 1);
    // RFC 5321 §4.1.2 has no space after the colon, but Postfix (with its default
    // strict_rfc821_envelopes = no) and most MTAs accept "FROM: <a@b>"; so do we.
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty() || rest.front() != '<') return std::nullopt;

    // A quoted local part may contain '>' (RFC 5321 §4.1.2 Quoted-string).
    bool quoted = false;
    for (size_t i = 1; i < rest.size(); ++i) {
        const char c = rest[i];
        if (quoted && c == '\\') {
            ++i;
        } else if (c == '"') {
            quoted = !quoted;
        } else if (c == '>' && !quoted) {
            // Parameters (SIZE=, BODY=) follow after a space; anything glued on is junk.
            if (i + 1 < rest.size() && rest[i + 1] != ' ') return std::nullopt;
            return std::string(rest.substr(1, i - 1));
        }
    }
    return std::nullopt;
}

}  // namespace smtpscreen
