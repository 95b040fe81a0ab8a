#include "screen/deep_tests.h"

#include <algorithm>
#include <array>
#include <cstdio>

#include "core/text.h"

namespace smtpscreen {
namespace {

// postscreen cuts client text in its log lines at 100 octets (%.100s).
constexpr size_t kExcerptMax = 100;

bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string prefix(std::string_view event, std::string_view client, std::string_view after) {
    std::string out(event);
    out += " from ";
    out += client;
    out += " after ";
    out += log_excerpt(after);
    return out;
}

// Like postfix's is_header(): a field name, then the colon with nothing between.
bool looks_like_header(std::string_view line, const SmtpCommand& cmd) {
    return !cmd.verb.empty() && line.size() > cmd.verb.size() && line[cmd.verb.size()] == ':' &&
           !is_smtp_verb(cmd.verb);
}

}  // namespace

bool is_smtp_verb(std::string_view upper_verb) {
    static constexpr std::array<std::string_view, 22> kVerbs{
        "HELO", "EHLO", "MAIL", "RCPT",     "DATA",     "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
        "SEND", "SOML", "SAML", "TURN",     "STARTTLS", "AUTH", "BDAT", "ETRN", "ATRN", "XCLIENT",
        "XFORWARD"};
    return std::find(kVerbs.begin(), kVerbs.end(), upper_verb) != kVerbs.end();
}

std::string log_excerpt(std::string_view bytes) {
    std::string out;
    for (unsigned char c : bytes.substr(0, kExcerptMax)) {
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        }
    }
    if (bytes.size() > kExcerptMax) out += "...";
    return out;
}

std::optional<std::string> check_pipelining(std::string_view client, std::string_view after, std::string_view unread) {
    if (unread.empty()) return std::nullopt;
    return prefix("COMMAND PIPELINING", client, after) + ": " + log_excerpt(unread);
}

std::optional<std::string> check_non_smtp(std::string_view client, std::string_view after, std::string_view line,
                                          const std::vector<std::string>& forbidden) {
    // Every SMTP verb starts with a letter; what does not (an empty line, a TLS
    // ClientHello, a binary probe, " EHLO" with a leading space) is not a client that
    // speaks SMTP (docs/design.md, step 6).
    bool fails = line.empty() || !is_letter(line.front());
    if (!fails) {
        const SmtpCommand cmd = parse_command(line);
        fails = looks_like_header(line, cmd) ||
                std::any_of(forbidden.begin(), forbidden.end(),
                            [&](const std::string& word) { return iequals(word, cmd.verb); });
    }
    if (!fails) return std::nullopt;
    return prefix("NON-SMTP COMMAND", client, after) + ": " + log_excerpt(line);
}

std::optional<std::string> check_bare_newline(std::string_view client, std::string_view after, const CommandLine& line) {
    if (!line.bare_lf) return std::nullopt;
    return prefix("BARE NEWLINE", client, after);
}

}  // namespace smtpscreen
