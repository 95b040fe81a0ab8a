#include "config/ini_lines.h"

#include <ini.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "config/keys.h"

namespace smtpscreen {

namespace {

bool is_space(char ch) {
    return std::isspace(static_cast<unsigned char>(ch)) != 0;  // as inih trims
}

// ---------------------------------------------------------------------------------
// Reading the INI text. libinih splits lines into section/key/value; our reader feeds
// it one line at a time, which gives the line numbers (Debian's inih has no
// INI_HANDLER_LINENO) and lets us report every malformed line, not only the first.

struct IniPass {
    IniPass(LoadState& s, std::string_view text) : state(s), rest(text), finished(text.empty()) {}

    LoadState& state;
    std::string_view rest;
    bool finished;
    int line = 0;
    std::string section;
    bool section_valid = true;      // keys under an unknown section are skipped silently
    bool continuation_allowed = false;
    bool is_continuation = false;   // the line being handed to inih
    std::string last_key;           // key a continuation appends to ("" if refused)

    void error(std::string_view what) {
        state.problems.push_back({line, fmt::format("{}:{}: {}", state.path, line, what)});
    }

    static bool looks_like_section(std::string_view body) {
        if (body.empty() || body.front() != '[') return false;
        size_t close = body.find(']');
        if (close == std::string_view::npos) return false;
        auto after = trim(body.substr(close + 1));
        auto name = trim(body.substr(1, close - 1));
        bool word = !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
            return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        });
        return word && (after.empty() || after.front() == ';' || after.front() == '#');
    }

    static bool looks_like_key(std::string_view section, std::string_view body) {
        size_t eq = body.find('=');
        return eq != std::string_view::npos && find_config_key(section, trim(body.substr(0, eq))) != nullptr;
    }

    std::string section_line(std::string_view body) {
        size_t close = body.find(']');
        if (close == std::string_view::npos) {
            error(fmt::format("{} is an unterminated section header (use [name])", quote(body)));
            section_valid = false;
            section.clear();
            return "#";
        }
        auto after = trim(body.substr(close + 1));
        if (!after.empty() && after.front() != ';' && after.front() != '#') {
            error(fmt::format("text after the section header {} (put each key = value on a line of its own)",
                              quote(body.substr(0, close + 1))));
        }
        section = std::string(trim(body.substr(1, close - 1)));
        section_valid = known_section(section);
        if (!section_valid) {
            error(fmt::format("[{}]: unknown section (use one of {})", section, section_list()));
        }
        return "[" + section + "]";
    }

    std::string key_line(std::string_view body) {
        size_t eq = body.find('=');
        size_t colon = body.find(':');
        // inih also splits on ':'; only "key = value" is documented, and a stray colon
        // is more often a forgotten '=' before an ip:port.
        if (eq == std::string_view::npos || (colon != std::string_view::npos && colon < eq)) {
            error(fmt::format("{} is not a setting (use key = value)", quote(body)));
            return "#";
        }
        if (trim(body.substr(0, eq)).empty()) {
            error(fmt::format("{} has no key name (use key = value)", quote(body)));
            return "#";
        }
        continuation_allowed = true;
        return std::string(body);
    }

    // What inih should see for one line of the file.
    std::string translate(std::string_view raw, int max_line) {
        if (line == 1 && raw.substr(0, 3) == "\xEF\xBB\xBF") raw.remove_prefix(3);
        if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
        is_continuation = false;
        auto body = raw.substr(std::min(raw.find_first_not_of(" \t"), raw.size()));
        bool indented = body.size() != raw.size();
        if (body.empty() || body.front() == ';' || body.front() == '#') {
            continuation_allowed = false;
            return body.empty() ? "" : "#";
        }
        // inih's line buffer is fixed (200 bytes in Debian's build); a longer line
        // would be split silently into two, so refuse it with a way out. print_config
        // wraps its lines to the same length.
        size_t limit = std::min(kIniMaxLine, static_cast<size_t>(std::max(max_line, 2)) - 2);
        if (raw.size() > limit) {
            error(fmt::format("line is longer than {} characters (wrap a long value onto indented continuation lines)",
                              limit));
            continuation_allowed = false;
            return "#";
        }
        if (indented && continuation_allowed && !looks_like_section(body) && !looks_like_key(section, body)) {
            is_continuation = true;
            return std::string(raw);
        }
        continuation_allowed = false;
        if (body.front() == '[') return section_line(body);
        return key_line(body);
    }
};

char* read_ini_line(char* str, int num, void* stream) {
    auto& pass = *static_cast<IniPass*>(stream);
    if (pass.finished) return nullptr;
    size_t nl = pass.rest.find('\n');
    auto raw = pass.rest.substr(0, nl);
    pass.rest = nl == std::string_view::npos ? std::string_view{} : pass.rest.substr(nl + 1);
    pass.finished = pass.rest.empty();
    ++pass.line;
    std::string out = pass.translate(raw, num) + "\n";
    std::memcpy(str, out.c_str(), out.size() + 1);  // translate() kept it below num
    return str;
}

int on_ini_value(void* user, const char* section, const char* name, const char* value) {
    auto& pass = *static_cast<IniPass*>(user);
    if (!pass.section_valid) return 1;
    auto& values = pass.state.values;
    if (pass.is_continuation) {
        if (!pass.last_key.empty()) {
            auto& raw = values[pass.last_key].value;
            raw += raw.empty() ? "" : " ";
            raw += value;
        }
        return 1;
    }
    pass.last_key.clear();
    std::string_view sec = section;
    std::string_view key = name;
    if (sec.empty()) {
        pass.error(fmt::format("{}: the key is outside any section (put it under its [section] header)", key));
        return 1;
    }
    std::string full = fmt::format("{}.{}", sec, key);
    if (find_config_key(sec, key) == nullptr) {
        pass.error(fmt::format("{}: unknown key {}", full, unknown_key_hint(sec, key)));
        return 1;
    }
    // "key = ;x" would read back as an empty value (a ';' after white space starts a
    // comment), so --print-config could not reproduce it: refuse it here.
    if (value[0] == ';' || value[0] == '#') {
        pass.error(fmt::format("{}: the value starts with '{}', which reads as a comment (remove it)", full, value[0]));
        return 1;
    }
    if (auto it = values.find(full); it != values.end()) {
        pass.error(fmt::format("{}: is set twice, first on line {} (keep one)", full, it->second.line));
        return 1;
    }
    values.emplace(full, RawValue{value, pass.line});
    pass.last_key = full;
    return 1;
}

// ---------------------------------------------------------------------------------
// Writing a value back in lines the reader above reads as that value.

// Wrap only what would not fit in a readable line, since tools that read the output
// line by line handle a continuation line less well than a long one.
constexpr size_t kReadableLine = 190;

// How one key's lines look: the readable form first; the compact form ("key=value",
// continuation lines indented by one space, lines as long as load_config reads) fits
// every value the readable one cannot and that load_config could have read.
struct LineStyle {
    std::string_view equals;  // between the key and the value
    std::string_view indent;  // of continuation lines
    size_t max_line;
};
constexpr LineStyle kReadable{" = ", "    ", kReadableLine};
constexpr LineStyle kCompact{"=", " ", kIniMaxLine};

// Lines for one value in one style. A value is cut only at a single space between two
// other characters (load_config joins continuation lines with one space); the cuts are
// chosen greedily, longest line first, among those after which the rest still fits.
class ValueLines {
public:
    ValueLines(std::string_view section, std::string_view value, const LineStyle& style)
        : section_(section), value_(value), style_(style) {}

    std::optional<std::string> lay_out(std::string_view key) {
        std::string head = fmt::format("{}{}", key, style_.equals);
        if (value_.empty()) return trimmed(head) + "\n";
        if (head.size() + value_.size() <= style_.max_line && ini_piece_reads_back(value_)) {
            return head + std::string(value_) + "\n";
        }
        find_line_ends();
        // The first line holds the longest prefix that fits, or nothing when even the
        // first word does not fit after the key (the value then starts on the next line).
        for (size_t end = previous_cut(value_.size()); end > 0; end = previous_cut(end)) {
            if (head.size() + end <= style_.max_line && ini_piece_reads_back(value_.substr(0, end)) &&
                line_end_[end + 1] != kNone) {
                return head + std::string(value_.substr(0, end)) + "\n" + continuation_lines(end + 1);
            }
        }
        if (line_end_[0] == kNone) return std::nullopt;
        return trimmed(head) + "\n" + continuation_lines(0);
    }

private:
    static constexpr size_t kNone = std::string_view::npos;

    static std::string trimmed(std::string_view head) {
        while (!head.empty() && head.back() == ' ') head.remove_suffix(1);
        return std::string(head);
    }

    // A cut is a single space with a character other than white space on both sides.
    bool is_cut(size_t i) const {
        return i > 0 && i + 1 < value_.size() && value_[i] == ' ' && !is_space(value_[i - 1]) &&
               !is_space(value_[i + 1]);
    }
    // The cut before `end` (0 if none).
    size_t previous_cut(size_t end) const {
        while (end > 0 && !is_cut(--end)) {
        }
        return end;
    }

    bool fits_continuation(size_t start, size_t end) const {
        auto piece = value_.substr(start, end - start);
        return style_.indent.size() + piece.size() <= style_.max_line && ini_piece_reads_back(piece) &&
               ini_line_continues(section_, piece);
    }

    // line_end_[start]: where the longest continuation line from `start` ends such that
    // the rest fits too (kNone: nothing fits). From the end backwards, so that every
    // line's rest is known when the line is weighed.
    void find_line_ends() {
        line_end_.assign(value_.size() + 1, kNone);
        for (size_t start = value_.size(); start-- > 0;) {
            if (start != 0 && !is_cut(start - 1)) continue;
            size_t room = style_.max_line - std::min(style_.max_line, style_.indent.size());
            size_t end = std::min(value_.size(), start + room);
            if (end < value_.size() && !is_cut(end)) end = previous_cut(end);
            for (; end > start; end = previous_cut(end)) {
                bool rest = end == value_.size() || line_end_[end + 1] != kNone;
                if (rest && fits_continuation(start, end)) {
                    line_end_[start] = end;
                    break;
                }
            }
        }
    }

    std::string continuation_lines(size_t start) const {
        std::string out;
        while (start < value_.size()) {
            size_t end = line_end_[start];
            out += style_.indent;
            out.append(value_.substr(start, end - start));
            out += "\n";
            start = end + 1;
        }
        return out;
    }

    std::string_view section_;
    std::string_view value_;
    const LineStyle& style_;
    std::vector<size_t> line_end_;
};

}  // namespace

static_assert(INI_MAX_LINE - 2 == kIniMaxLine, "kIniMaxLine is inih's line buffer less newline and NUL");

bool ini_piece_reads_back(std::string_view piece) {
    // As inih reads a value: isspace() trims both ends, ';' after white space starts a
    // comment; on_ini_value refuses a value that starts like a comment.
    if (piece.empty()) return true;
    if (is_space(piece.front()) || is_space(piece.back()) || piece.front() == ';' || piece.front() == '#') return false;
    for (size_t i = 1; i < piece.size(); ++i) {
        if (piece[i] == ';' && is_space(piece[i - 1])) return false;
        if (piece[i] == '\n' || piece[i] == '\0') return false;
    }
    return true;
}

bool ini_line_continues(std::string_view section, std::string_view text) {
    return !text.empty() && text.front() != ';' && text.front() != '#' && !IniPass::looks_like_section(text) &&
           !IniPass::looks_like_key(section, text);
}

std::optional<std::string> ini_key_lines(std::string_view section, std::string_view key, std::string_view value) {
    if (auto lines = ValueLines(section, value, kReadable).lay_out(key)) return lines;
    return ValueLines(section, value, kCompact).lay_out(key);
}

void read_ini(LoadState& state, std::string_view text) {
    IniPass pass(state, text);
    ini_parse_stream(read_ini_line, &pass, on_ini_value, &pass);
}

}  // namespace smtpscreen
