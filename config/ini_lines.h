#pragma once
// The INI file's lines, read and written by one set of rules: load_config reads them
// with these, and --print-config writes every value in lines these read back to the
// same value.
//
// Continuation lines work as in Postfix's main.cf and Python's configparser: an
// indented line right after a key line continues its value (joined with one space),
// so a long dnsbl.sites list can be wrapped. An indented line that reads as a key of
// the current section, or as a section header, is taken as such instead, because
// indenting keys is a common habit and never means a continuation.
#include <optional>
#include <string>
#include <string_view>

#include "config/load_state.h"

namespace smtpscreen {

// The longest line load_config reads: inih's line buffer (INI_MAX_LINE, 200 bytes in
// Debian's build) less the newline and the terminating NUL.
constexpr size_t kIniMaxLine = 198;

// Reads INI text into state.values ("section.key" -> value as written, with its line);
// every malformed line, unknown section or key, and key set twice goes to
// state.problems.
void read_ini(LoadState& state, std::string_view text);

// Whether an indented line reading `text`, inside [section], continues the value before
// it, as load_config reads it: not a comment, a section header or a key of that section.
bool ini_line_continues(std::string_view section, std::string_view text);

// Whether `piece`, written as the value of a key line or as an indented continuation
// line, reads back as exactly itself: no white space at either end (the INI reader
// strips it) and no ';' after white space (it starts a comment).
bool ini_piece_reads_back(std::string_view piece);

// "key = value" as INI lines that load_config reads back to exactly `value`: one line
// when it fits, otherwise wrapped at single spaces onto indented continuation lines.
// When the readable form ("key = value", four spaces of indent, lines of at most 190)
// cannot carry it, the compact one ("key=value", one space, lines of kIniMaxLine) does
// for every value read from lines of a file; nullopt when neither can (a word longer
// than a line, or one that would read as a key or a comment at a line's start).
std::optional<std::string> ini_key_lines(std::string_view section, std::string_view key, std::string_view value);

}  // namespace smtpscreen
