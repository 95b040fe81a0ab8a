#pragma once
// The message every talking session sends after DATA.
#include <cstddef>
#include <string>
#include <string_view>

namespace smtpload {

// Headers, then a body of `body_size` octets (before dot-stuffing) in lines of at most
// 78 octets plus CRLF; every 40th line starts with "." and is sent dot-stuffed, so the
// server's end-of-data scanner sees stuffed dots as real mail has them. Ends with the
// CRLF.CRLF terminator. Built once per run and shared read-only by every session, so a
// 10 MB message costs 10 MB whatever the concurrency.
std::string build_message(size_t body_size, std::string_view from, std::string_view to);

}  // namespace smtpload
