#include "proxy/ehlo_rewriter.h"

#include <algorithm>

#include "proxy/smtp_words.h"

namespace smtpscreen {

namespace {

using smtp_words::first_word;
using smtp_words::iequals;

// Keywords this rewriter acts on are at most 8 octets; a line prefix shorter than this
// could hide "XCLIENT " from the check.
constexpr size_t kMinLine = 64;

// The final line sent when every line after an already-streamed over-long line was
// stripped (see close_stripped_reply). RFC 5321 §4.1.1.1: keywords starting with "X"
// are local extensions, which clients ignore.
constexpr std::string_view kFiller = " XSMTPSCREEN\r\n";

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

// The STARTTLS line added to a positive EHLO reply, with the reply's own code.
std::string starttls_line(std::string_view head, bool final) {
    std::string line(head.substr(0, 3));
    line += final ? " STARTTLS\r\n" : "-STARTTLS\r\n";
    return line;
}

}  // namespace

EhloRewriter::EhloRewriter(Options options) : options_(options) {
    options_.max_line = std::max(options_.max_line, kMinLine);
}

void EhloRewriter::begin(bool offer_starttls) {
    offer_starttls_ = offer_starttls;
    line_.clear();
    pending_.clear();
    first_line_ = true;
    long_line_ = LongLine::None;
    starttls_after_line_ = false;
}

void EhloRewriter::bytes(std::string_view segment, std::string_view head, bool line_ends, bool final,
                         std::string& to_client) {
    if (long_line_ == LongLine::None) {
        size_t room = options_.max_line - line_.size();
        if (segment.size() <= room) {
            line_.append(segment);
            if (line_ends) line_complete(head, final, to_client);
            return;
        }
        line_.append(segment.substr(0, room));
        segment.remove_prefix(room);
        begin_long_line(head, to_client);
    }
    if (long_line_ == LongLine::Forward) to_client.append(segment);
    if (line_ends) {
        if (long_line_ == LongLine::Drop && final) close_stripped_reply(head, to_client);
        if (starttls_after_line_) {
            to_client.append(starttls_line(head, true));
            starttls_after_line_ = false;
        }
        long_line_ = LongLine::None;
        first_line_ = false;
    }
}

void EhloRewriter::line_complete(std::string_view head, bool final, std::string& to_client) {
    if (strip_line(line_)) {
        if (final) close_stripped_reply(head, to_client);
    } else {
        to_client.append(pending_);
        pending_.clear();
        if (!final) {
            pending_ = line_;
        } else if (!offers_starttls(line_)) {
            to_client.append(line_);
        } else if (first_line_) {
            // "250 mx.example.org": the first line is the server's name, so STARTTLS can
            // only follow it, as the new final line.
            make_continued(line_);
            to_client.append(line_);
            to_client.append(starttls_line(head, true));
        } else {
            to_client.append(starttls_line(head, false));
            to_client.append(line_);
        }
    }
    line_.clear();
    first_line_ = false;
}

// An over-long line is judged by its first max_line octets. A kept one is sent at once
// (and with it the pending line, which a kept line now follows); a stripped one is
// dropped to its end.
void EhloRewriter::begin_long_line(std::string_view head, std::string& to_client) {
    if (strip_line(line_)) {
        long_line_ = LongLine::Drop;
    } else {
        to_client.append(pending_);
        pending_.clear();
        // The head of the line is known: max_line is at least 64.
        if (is_final_line(head) && offers_starttls(line_)) {
            if (first_line_) {
                make_continued(line_);
                starttls_after_line_ = true;
            } else {
                to_client.append(starttls_line(head, false));
            }
        }
        to_client.append(line_);
        long_line_ = LongLine::Forward;
    }
    line_.clear();
}

// The reply's final line was stripped: the last kept line becomes the final one
// ("250-PIPELINING" -> "250 PIPELINING"), or the client would wait for more lines.
// When that line already went out (it was over-long and streamed), a filler keyword
// closes the reply instead; that takes a backend with an EHLO line over max_line.
void EhloRewriter::close_stripped_reply(std::string_view head, std::string& to_client) {
    if (offers_starttls(head)) {
        // Our STARTTLS becomes the final line; the last kept line stays a continuation.
        to_client.append(pending_);
        pending_.clear();
        to_client.append(starttls_line(head, true));
        return;
    }
    if (!pending_.empty()) {
        pending_[3] = ' ';   // pending lines are non-final: at least "ddd-"
        to_client.append(pending_);
        pending_.clear();
        return;
    }
    to_client.append(head.substr(0, 3));
    to_client.append(kFiller);
}

// The first line is the server's name, never a keyword, and only a positive reply lists
// extensions.
bool EhloRewriter::strip_line(std::string_view line) const {
    if (first_line_ || line.size() < 4 || line[0] != '2') return false;
    std::string_view keyword = first_word(line.substr(4));
    return iequals(keyword, "XCLIENT") || iequals(keyword, "XFORWARD") || iequals(keyword, "CHUNKING") ||
           (options_.strip_starttls && iequals(keyword, "STARTTLS"));
}

// `line` starts with the reply code.
bool EhloRewriter::offers_starttls(std::string_view line) const {
    return offer_starttls_ && !line.empty() && line[0] == '2';
}

}  // namespace smtpscreen
