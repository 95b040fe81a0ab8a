#include "core/duration.h"

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>

namespace smtpscreen {

namespace {

struct Unit {
    std::string_view suffix;
    int64_t millis;
};

// Longest suffix first so that "ms" is not read as "m" followed by junk. Weeks are
// accepted because Postfix accepts them; format_duration never produces them.
constexpr std::array<Unit, 6> kUnits{{
    {"ms", 1},
    {"s", 1000},
    {"m", 60 * 1000},
    {"h", 60 * 60 * 1000},
    {"d", 24 * 60 * 60 * 1000},
    {"w", 7 * 24 * 60 * 60 * 1000},
}};

}  // namespace

std::optional<Millis> parse_duration(std::string_view text) {
    size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0) return std::nullopt;
    int64_t number = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + digits, number);
    if (ec != std::errc{} || end != text.data() + digits) return std::nullopt;

    std::string_view suffix = text.substr(digits);
    int64_t scale = 1000;  // a bare number means seconds, as in postscreen
    if (!suffix.empty()) {
        bool known = false;
        for (const auto& unit : kUnits) {
            if (suffix == unit.suffix) {
                scale = unit.millis;
                known = true;
                break;
            }
        }
        if (!known) return std::nullopt;
    }
    if (number > std::numeric_limits<int64_t>::max() / scale) return std::nullopt;
    return Millis{number * scale};
}

std::string format_duration(Millis d) {
    int64_t ms = d.count();
    if (ms == 0) return "0s";
    // Whole days down to whole seconds: the largest unit that divides exactly.
    for (size_t i = 4; i >= 1; --i) {
        if (ms % kUnits[i].millis == 0) return std::to_string(ms / kUnits[i].millis) + std::string(kUnits[i].suffix);
    }
    return std::to_string(ms) + "ms";
}

}  // namespace smtpscreen
