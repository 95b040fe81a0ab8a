#include "screen/ehlo_keywords.h"

#include <utility>

#include "core/text.h"

namespace smtpscreen {
namespace {

bool is_alnum(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

std::string_view keyword_of(std::string_view ehlo_line) { return ehlo_line.substr(0, ehlo_line.find(' ')); }

}  // namespace

std::vector<std::string> postscreen_ehlo_keywords() {
    return {"SIZE", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"};
}

std::string_view unofferable_reason(std::string_view ehlo_line) {
    const std::string keyword = ascii_upper(keyword_of(ehlo_line));
    if (keyword == "XCLIENT" || keyword == "XFORWARD") {
        return "it would let a client name another address to the backend (it is never offered)";
    }
    if (keyword == "CHUNKING" || keyword == "BINARYMIME") return "BDAT is refused before the handoff";
    if (keyword == "STARTTLS") return "STARTTLS is offered when tls.cert and tls.key are set";
    // Exim's early pipelining (RFC draft "SMTP Early Pipelining") is pipelining too.
    if (keyword == "PIPELINING" || keyword == "PIPE_CONNECT" || keyword == "X_PIPE_CONNECT") {
        return "the deep pipelining test catches clients that pipeline without it";
    }
    if (keyword == "AUTH") return "AUTH is refused before the handoff";
    if (keyword == "VRFY") return "VRFY is disabled before the handoff";
    if (keyword == "HELP") return "HELP is not answered before the handoff";
    return {};
}

bool valid_ehlo_line(std::string_view line) {
    const std::string_view keyword = keyword_of(line);
    if (keyword.empty() || !is_alnum(keyword.front())) return false;
    for (char c : keyword) {
        if (!is_alnum(c) && c != '-' && c != '_') return false;  // '_': Exim's X_PIPE_CONNECT
    }
    for (char c : line.substr(keyword.size())) {
        if (c < 0x20 || c > 0x7e) return false;
    }
    return true;
}

std::vector<std::string> ehlo_reply_keywords(std::string_view reply) {
    std::vector<std::string> out;
    bool first = true;
    while (!reply.empty()) {
        const size_t eol = reply.find('\n');
        std::string_view line = reply.substr(0, eol);
        reply.remove_prefix(eol == std::string_view::npos ? reply.size() : eol + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (std::exchange(first, false) || line.size() <= 4) continue;
        const std::string_view keyword_line = trim(line.substr(4), " ");
        if (valid_ehlo_line(keyword_line)) out.emplace_back(keyword_line);
    }
    return out;
}

std::vector<std::string> offerable_keywords(const std::vector<std::string>& keywords) {
    std::vector<std::string> out;
    for (const auto& k : keywords) {
        if (unofferable_reason(k).empty()) out.push_back(k);
    }
    return out;
}

std::vector<std::string> tls_first_keywords(const std::vector<std::string>& keywords) {
    std::vector<std::string> out;
    for (const auto& k : keywords) {
        const std::string keyword = ascii_upper(keyword_of(k));
        if (keyword == "XCLIENT" || keyword == "XFORWARD" || keyword == "CHUNKING" || keyword == "BINARYMIME" ||
            keyword == "STARTTLS" || keyword == "PIPE_CONNECT" || keyword == "X_PIPE_CONNECT") {
            continue;
        }
        out.push_back(k);
    }
    return out;
}

}  // namespace smtpscreen
