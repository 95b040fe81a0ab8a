#pragma once
// How a backend MTA reads the first word of a command line or of an EHLO keyword line:
// shared by the relay's command pairing and its EHLO rewriter, which must judge a line
// exactly as the backend (or the client) will.
#include <algorithm>
#include <cctype>
#include <string_view>

#include "core/text.h"

namespace smtpscreen::smtp_words {

// Verbs and keywords compare without regard to ASCII case (RFC 5321 §2.4).
using smtpscreen::iequals;

inline bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

// Postfix's smtpd_token() skips leading white space and the backend looks the verb up
// case-insensitively, so " xclient ADDR=..." is XCLIENT to it. Ending the verb at any
// octet that cannot be part of a verb (':', '<', NUL, ...) errs on the side of treating
// an odd line as the command it starts with: such a line is at worst blocked or held,
// never let through as something the backend would read differently.
inline std::string_view first_word(std::string_view line) {
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

}  // namespace smtpscreen::smtp_words
