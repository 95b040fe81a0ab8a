#pragma once
// Small string helpers shared by the parsers of configuration, access lists, DNSBL
// sites, SMTP commands and DNS names. ASCII only and independent of the locale: SMTP
// verbs, DNS names (RFC 4343) and configuration keys compare without regard to ASCII
// case, and a C library call such as toupper() would follow LC_CTYPE instead.
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen {

constexpr char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
constexpr char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }
std::string ascii_lower(std::string_view s);
std::string ascii_upper(std::string_view s);

// Equal without regard to ASCII case.
bool iequals(std::string_view a, std::string_view b);

// `s` without the characters of `chars` at either end.
std::string_view trim(std::string_view s, std::string_view chars);

// The pieces of `s` between occurrences of `sep`, empty ones included: "a,,b" on ","
// gives "a", "", "b"; an empty `s` gives one empty piece.
std::vector<std::string_view> split(std::string_view s, std::string_view sep);

}  // namespace smtpscreen
