#pragma once
// What one load of an INI file collects: the raw values as written (with their lines)
// and every problem found, so that --check reports them all, in file order.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/text.h"

namespace smtpscreen {

struct Problem {
    int line;  // line of the INI file it belongs to (0: the file as a whole), for sorting
    std::string text;
};

struct RawValue {
    std::string value;
    int line;
};

struct LoadState {
    std::string path;
    Config& cfg;
    std::vector<Problem> problems;
    std::map<std::string, RawValue> values;  // "section.key" -> value as written

    // "FILE:LINE: key: what" (or "FILE: key: what" for line 0).
    void add(int line, std::string_view key, std::string_view what);
    int line_of(const std::string& key) const;
    bool is_set(const std::string& key) const { return values.count(key) != 0; }
};

// Longer than any sane timeout or TTL, short enough that adding it to a Unix time in
// milliseconds cannot overflow.
constexpr Millis kMaxDuration{3650LL * 86400 * 1000};

enum class Zero { Allowed, Refused };

// One key being applied: the parsers below report problems under its name and line,
// with the wording every message of the configuration shares (what is wrong, then
// what to use instead).
class KeyContext {
public:
    KeyContext(LoadState& state, std::string key, int line) : state_(state), key_(std::move(key)), line_(line) {}

    Config& cfg() { return state_.cfg; }
    const std::string& key() const { return key_; }

    void fail(std::string_view what) { state_.add(line_, key_, what); }
    // A problem located in another file (access.file, dnsbl.reply_map) sorts with this key.
    void fail_elsewhere(std::string text) { state_.problems.push_back({line_, std::move(text)}); }

    std::optional<bool> boolean(std::string_view v);
    std::optional<Millis> duration(std::string_view v, Zero zero);
    std::optional<int> integer(std::string_view v, long long lo, long long hi);
    template <typename T, size_t N>
    std::optional<T> choice(std::string_view v, const std::array<std::pair<std::string_view, T>, N>& names,
                            std::string_view what);
    // "ip:port"; with default_port a bare ip is accepted too. Port 0 is refused.
    std::optional<Endpoint> endpoint(std::string_view v, std::optional<uint16_t> default_port);
    std::optional<std::vector<Endpoint>> endpoints(std::string_view v, std::optional<uint16_t> default_port);
    std::optional<std::vector<Cidr>> cidrs(std::string_view v);
    // The whole text of a file a key names; a problem reading it is this key's.
    std::optional<std::string> file(std::string_view v);

private:
    LoadState& state_;
    std::string key_;
    int line_;
};

// Helpers the parsers share with the INI reader and the key table.
std::string_view trim(std::string_view s);       // spaces, tabs and CRs at both ends
std::string quote(std::string_view v);           // "v", as messages show a value
// Comma-separated list, items trimmed; empty items (a trailing comma left over from
// wrapping a long list) are skipped rather than refused.
std::vector<std::string_view> split_list(std::string_view s);
// "a, b or c" from the names of a choice.
template <typename T, size_t N>
std::string choice_names(const std::array<std::pair<std::string_view, T>, N>& names) {
    std::string out;
    for (size_t i = 0; i < N; ++i) {
        out += i == 0 ? "" : i + 1 == N ? " or " : ", ";
        out += names[i].first;
    }
    return out;
}
template <typename T, size_t N>
std::string_view choice_name(const std::array<std::pair<std::string_view, T>, N>& names, T value) {
    for (const auto& [name, v] : names) {
        if (v == value) return name;
    }
    return names[0].first;
}

template <typename T, size_t N>
std::optional<T> KeyContext::choice(std::string_view v, const std::array<std::pair<std::string_view, T>, N>& names,
                                    std::string_view what) {
    auto l = ascii_lower(v);
    for (const auto& [name, value] : names) {
        if (l == name) return value;
    }
    fail(quote(v) + " is not " + std::string(what) + " (use " + choice_names(names) + ")");
    return std::nullopt;
}

// Reads a whole regular file; on failure sets *why and returns nullopt.
std::optional<std::string> read_text_file(const std::string& path, std::string* why);

}  // namespace smtpscreen
