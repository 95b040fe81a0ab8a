#include "edge/greylist_sender.h"

#include <optional>
#include <tuple>
#include <utility>

namespace smtpscreen {

namespace {

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
constexpr bool is_srs_separator(char c) { return c == '=' || c == '+' || c == '-'; }

// The text up to the next '=' of `rest` (taken off it), when there is one and it is not
// empty.
std::optional<std::string_view> next_field(std::string_view& rest) {
    const size_t eq = rest.find('=');
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;
    std::string_view field = rest.substr(0, eq);
    rest.remove_prefix(eq + 1);
    return field;
}

// SRS0's fields after its separator: HASH=TT=domain=local (the local part may hold '='
// itself). The original (local, domain).
std::optional<std::pair<std::string_view, std::string_view>> srs0_original(std::string_view rest) {
    if (!next_field(rest) || !next_field(rest)) return std::nullopt;  // the hash, the day stamp
    const auto domain = next_field(rest);
    if (!domain || rest.empty()) return std::nullopt;
    return std::pair{rest, *domain};
}

std::optional<std::pair<std::string_view, std::string_view>> srs_original(std::string_view local) {
    if (local.size() < 5 || local.substr(0, 3) != "srs" || !is_srs_separator(local[4])) return std::nullopt;
    std::string_view rest = local.substr(5);
    if (local[3] == '0') return srs0_original(rest);
    if (local[3] != '1') return std::nullopt;
    // SRS1: HASH=first forwarder's domain=, then the SRS0 part without "SRS0" but with its
    // separator, so that the original is the same one the first forwarder wrapped.
    if (!next_field(rest) || !next_field(rest)) return std::nullopt;
    if (rest.empty() || !is_srs_separator(rest.front())) return std::nullopt;
    return srs0_original(rest.substr(1));
}

// A BATV tag value starts with ten of [0-9a-z]: a key digit, three of the day, six of
// the hash.
bool looks_like_batv_tag(std::string_view field) {
    if (field.size() < 10) return false;
    for (size_t i = 0; i < 10; ++i) {
        if (!is_digit(field[i]) && !(field[i] >= 'a' && field[i] <= 'z')) return false;
    }
    return true;
}

std::string_view without_batv(std::string_view local) {
    if (local.substr(0, 5) != "prvs=") return local;
    const std::string_view rest = local.substr(5);
    const size_t eq = rest.find('=');
    // Exactly three fields (prvs, and two more), or it is not BATV as postgrey reads it.
    if (eq == std::string_view::npos || rest.find('=', eq + 1) != std::string_view::npos) return local;
    const std::string_view first = rest.substr(0, eq);
    const std::string_view second = rest.substr(eq + 1);
    if (second.empty()) return local;  // Perl's split drops a trailing empty field: two fields
    if (looks_like_batv_tag(second) && !looks_like_batv_tag(first)) return first;
    return second;
}

std::string digits_as_hash(std::string_view local) {
    std::string out;
    out.reserve(local.size());
    for (size_t i = 0; i < local.size();) {
        if (!is_digit(local[i])) {
            out += local[i++];
            continue;
        }
        size_t end = i;
        while (end < local.size() && is_digit(local[end])) ++end;
        const bool word_before = i > 0 && is_word(local[i - 1]);
        const bool word_after = end < local.size() && is_word(local[end]);
        if (word_before || word_after) out.append(local.substr(i, end - i));
        else out += '#';
        i = end;
    }
    return out;
}

}  // namespace

std::string greylist_sender_key(std::string_view address) {
    // The domain never holds '@'; a quoted local part may.
    const size_t at = address.rfind('@');
    if (at == std::string_view::npos) return std::string(address);
    std::string_view local = address.substr(0, at);
    std::string_view domain = address.substr(at + 1);
    if (auto original = srs_original(local)) std::tie(local, domain) = *original;
    local = without_batv(local);
    local = local.substr(0, local.find('+'));
    std::string key = digits_as_hash(local);
    key += '@';
    key += domain;
    return key;
}

}  // namespace smtpscreen
