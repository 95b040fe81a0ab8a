#pragma once
// The three deep protocol tests, one function each, as postscreen runs them on every
// command line it reads before the first RCPT TO. Each returns postscreen's log line
// when the client fails the test on this line and nothing when it does not; what
// follows a failure (deep.action) is the dialog's business (screen/smtp_dialog.h).
// Pure functions, no I/O.
//
// `client` is "[ip]:port". `after` is the verb of the client's last command before the
// offending bytes, "CONNECT" before its first one (postscreen's wording).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "screen/command_reader.h"

namespace smtpscreen {

// Command pipelining (RFC 2920 §3.1): a client may send its next command before it has
// our reply only when the EHLO reply offered PIPELINING, and ours never does. `after` is
// the command just read; `unread` is whatever the client sent behind it before we
// could reply (the rest of the same read, complete lines or not). Empty `unread`: pass.
// "COMMAND PIPELINING from [ip]:port after CMD: text"
std::optional<std::string> check_pipelining(std::string_view client, std::string_view after, std::string_view unread);

// Non-SMTP command: a verb in deep.forbidden_commands (compared without case; the
// default list is postscreen_forbidden_commands' CONNECT, GET, POST plus USER and PASS
// of POP3/FTP), a line shaped like an HTTP or mail header ("Host: x", "User-Agent: y":
// a word, no space, a colon, and the word not an SMTP verb), or a line that does not
// start with a letter (an empty line included).
// "NON-SMTP COMMAND from [ip]:port after CMD: text"
std::optional<std::string> check_non_smtp(std::string_view client, std::string_view after, std::string_view line,
                                          const std::vector<std::string>& forbidden);

// Bare newline: a command line ended by LF without CR (RFC 5321 §2.3.8). Spambots that
// write "\n" are the target; every real MTA sends CRLF.
// "BARE NEWLINE from [ip]:port after CMD"
std::optional<std::string> check_bare_newline(std::string_view client, std::string_view after, const CommandLine& line);

// RFC 5321 verbs and the extensions' (STARTTLS, AUTH, BDAT, ETRN, XCLIENT, ...): a
// line starting with one of these followed by a colon ("MAIL:x") is a malformed SMTP
// command, not a header.
bool is_smtp_verb(std::string_view upper_verb);

// Client bytes as they go into a log line: printable ASCII kept, CR and LF shown as
// \r and \n, any other byte as \xNN (so a client can neither split nor forge a log
// line), at most 100 bytes of input, "..." when cut. Same form as the session's
// PREGREET excerpt (proxy/event_log.h), which screen/ cannot reach.
std::string log_excerpt(std::string_view bytes);

}  // namespace smtpscreen
