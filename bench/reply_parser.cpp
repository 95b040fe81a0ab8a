#include "bench/reply_parser.h"

namespace smtpload {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

void ReplyParser::feed(std::string_view bytes) {
    if (buffer_.size() + bytes.size() > kMaxReply) {
        too_long_ = true;
        return;
    }
    buffer_.append(bytes);
}

ReplyParser::Result ReplyParser::next() {
    if (too_long_) return {Status::TooLong};
    for (;;) {
        size_t eol = buffer_.find('\n', scanned_);
        if (eol == std::string::npos) return {Status::NeedMore};
        std::string_view line(buffer_.data() + scanned_, eol - scanned_);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) ||
            (line.size() > 3 && line[3] != '-' && line[3] != ' ')) {
            return {Status::Garbage};
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        scanned_ = eol + 1;
        if (line.size() > 3 && line[3] == '-') continue;
        buffer_.erase(0, scanned_);
        scanned_ = 0;
        return {Status::Reply, code};
    }
}

}  // namespace smtpload
