#pragma once
// Splits what an SMTP server sends into replies (RFC 5321 §4.2.1): "ddd-text" lines
// continue a reply, a "ddd text" or bare "ddd" line ends it. The code of a reply is its
// last line's: smtpscreen's greet-wait "220-" line may be followed by "521 ..." when it
// drops a bot, and what the bot was told is the 521.
#include <cstddef>
#include <string>
#include <string_view>

namespace smtpload {

class ReplyParser {
public:
    enum class Status { Reply, NeedMore, Garbage, TooLong };
    struct Result {
        Status status;
        int code = 0;
    };

    // Replies longer than this are a broken server (every buffer here is bounded).
    static constexpr size_t kMaxReply = 64 * 1024;

    void feed(std::string_view bytes);
    // Call until it stops returning Status::Reply.
    Result next();
    // Bytes of an unfinished reply are buffered (e.g. the greet-wait "220-" line).
    bool partial() const { return buffer_.size() > 0; }

private:
    std::string buffer_;
    size_t scanned_ = 0;  // lines before this offset are complete "ddd-" continuations
    bool too_long_ = false;
};

}  // namespace smtpload
