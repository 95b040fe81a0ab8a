#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace smtpscreen {

using Millis = std::chrono::milliseconds;

// "300s", "5m", "1h", "1d", "250ms", "0"; a bare number means seconds, as in postscreen.
std::optional<Millis> parse_duration(std::string_view text);
// The shortest exact form: 6000ms -> "6s", 86400000ms -> "1d", 1500ms -> "1500ms".
std::string format_duration(Millis d);

}  // namespace smtpscreen
