#pragma once
// Splits a client's byte stream into SMTP command lines with a hard bound on what it
// keeps, remembering how each line ended (bare LF is a deep-test violation).
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen {

struct CommandLine {
    std::string text;        // without the line ending; at most max_line octets kept
    bool bare_lf = false;    // ended in LF without CR
    bool too_long = false;   // longer than max_line (RFC 5321 §4.5.3.1.4: 512 with CRLF)
};

class CommandReader {
public:
    explicit CommandReader(size_t max_line = 512, size_t max_pending_lines = 64);
    // Appends bytes. Octets past max_line in one line are discarded (the line is marked
    // too_long); lines beyond max_pending_lines are dropped and overflowed() turns true.
    void feed(std::string_view bytes);
    std::optional<CommandLine> next();
    bool has_partial() const;          // bytes of an unfinished line are held
    bool overflowed() const { return overflowed_; }
    size_t pending_lines() const { return lines_.size(); }

private:
    size_t max_line_;
    size_t max_pending_;
    std::string partial_;
    bool partial_too_long_ = false;
    bool partial_cr_ = false;  // the last byte seen was CR: the line ending, or a bare CR
    // A vector, not a deque: libstdc++'s deque allocates some 600 bytes when it is made,
    // which every enforced and tarpitted client would hold while it says nothing.
    std::vector<CommandLine> lines_;
    bool overflowed_ = false;
};

struct SmtpCommand {
    std::string verb;   // upper case: "EHLO", "MAIL", ... ; "MAIL FROM:<a>" -> "MAIL"
    std::string args;   // the rest after one space, as sent
};
SmtpCommand parse_command(std::string_view line);

// Pulls the address out of "FROM:<a@b> SIZE=10" / "TO:<c@d>"; nullopt when malformed.
std::optional<std::string> mail_address(std::string_view args, std::string_view keyword);

}  // namespace smtpscreen
