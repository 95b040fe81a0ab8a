#include "config/postfix_params.h"

#include <algorithm>
#include <cctype>

#include "core/text.h"

namespace smtpscreen {

namespace {

constexpr int kMaxExpansionDepth = 20;
// Bounds on one expansion: "a = $b$b", "b = $c$c", ... doubles at every level.
constexpr int kMaxLookups = 10000;
constexpr size_t kMaxExpandedLength = 64 * 1024;

bool is_name_char(char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_';
}

// Index of the bracket that closes the one at `open`, counting nested ones; npos if none.
size_t closing(std::string_view s, size_t open, char left, char right) {
    int depth = 0;
    for (size_t i = open; i < s.size(); ++i) {
        if (s[i] == left) ++depth;
        if (s[i] == right && --depth == 0) return i;
    }
    return std::string_view::npos;
}

class Expander {
public:
    Expander(const ParamLookup& lookup, const std::map<std::string, std::string, std::less<>>& literal)
        : lookup_(lookup), literal_(literal) {}

    std::string expand(std::string_view v, int depth) const {
        std::string out;
        size_t i = 0;
        while (i < v.size() && out.size() <= kMaxExpandedLength) {
            if (v[i] != '$' || i + 1 == v.size()) {
                out += v[i++];
                continue;
            }
            char next = v[i + 1];
            if (next == '$') {
                out += '$';
                i += 2;
            } else if (next == '{' || next == '(') {
                size_t end = closing(v, i + 1, next, next == '{' ? '}' : ')');
                if (end == std::string_view::npos) {  // unbalanced: Postfix leaves it too
                    out += v.substr(i);
                    break;
                }
                out += braced(v.substr(i + 2, end - i - 2), depth);
                i = end + 1;
            } else if (is_name_char(next)) {
                size_t j = i + 1;
                while (j < v.size() && is_name_char(v[j])) ++j;
                out += value_of(v.substr(i + 1, j - i - 1), depth);
                i = j;
            } else {
                out += v[i++];
            }
        }
        return out;
    }

private:
    std::string value_of(std::string_view name, int depth) const {
        if (auto it = literal_.find(name); it != literal_.end()) return it->second;
        // A name inside its own expansion is empty, as Postfix refuses the recursion.
        if (depth >= kMaxExpansionDepth || ++lookups_ > kMaxLookups) return {};
        if (std::find(active_.begin(), active_.end(), name) != active_.end()) return {};
        auto raw = lookup_(name);
        if (!raw) return {};
        active_.emplace_back(name);
        auto out = expand(*raw, depth + 1);
        active_.pop_back();
        if (out.size() > kMaxExpandedLength) out.resize(kMaxExpandedLength);
        return out;
    }

    // The inside of ${...}: "name", "name?text", "name:text", "name?{text}:{text}".
    std::string braced(std::string_view body, int depth) const {
        size_t n = 0;
        while (n < body.size() && is_name_char(body[n])) ++n;
        auto name = body.substr(0, n);
        auto rest = trim(body.substr(n), " \t");
        if (rest.empty()) return value_of(name, depth);
        bool non_empty = !value_of(name, depth).empty();
        char op = rest.front();
        rest = trim(rest.substr(1), " \t");
        if (op != '?' && op != ':') return {};  // a comparison (3.0's "==", "<"): not used by postscreen
        if (op == '?' && !rest.empty() && rest.front() == '{') {
            size_t end = closing(rest, 0, '{', '}');
            if (end == std::string_view::npos) return {};
            auto when_set = rest.substr(1, end - 1);
            auto after = trim(rest.substr(end + 1), " \t");
            std::string_view when_empty;
            if (!after.empty() && after.front() == ':') {
                after = trim(after.substr(1), " \t");
                size_t e2 = after.empty() || after.front() != '{' ? std::string_view::npos : closing(after, 0, '{', '}');
                when_empty = e2 == std::string_view::npos ? after : after.substr(1, e2 - 1);
            }
            return expand(non_empty ? when_set : when_empty, depth);
        }
        if (!rest.empty() && rest.front() == '{' && rest.back() == '}') rest = rest.substr(1, rest.size() - 2);
        bool take = op == '?' ? non_empty : !non_empty;
        return take ? expand(rest, depth) : std::string();
    }

    const ParamLookup& lookup_;
    const std::map<std::string, std::string, std::less<>>& literal_;
    mutable int lookups_ = 0;
    mutable std::vector<std::string> active_;  // the names being expanded, outermost first
};

}  // namespace

PostfixParams PostfixParams::parse(std::string_view text) {
    PostfixParams params;
    std::string name;
    std::string value;
    auto flush = [&] {
        if (!name.empty()) params.set(std::move(name), std::string(trim(value, " \t")));
        name.clear();
        value.clear();
    };
    while (!text.empty()) {
        size_t nl = text.find('\n');
        auto line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        auto body = trim(line, " \t");
        if (body.empty() || body.front() == '#') continue;
        if (line.front() == ' ' || line.front() == '\t') {
            if (!name.empty()) {
                value += ' ';
                value += body;
                continue;
            }
        }
        flush();
        size_t eq = body.find('=');
        auto key = eq == std::string_view::npos ? std::string_view{} : trim(body.substr(0, eq), " \t");
        bool valid = !key.empty();
        for (char ch : key) valid = valid && is_name_char(ch);
        if (!valid) {
            params.unreadable_.emplace_back(body);
            continue;
        }
        name = std::string(key);
        value = std::string(body.substr(eq + 1));
    }
    flush();
    return params;
}

std::optional<std::string> PostfixParams::raw(std::string_view name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
}

void PostfixParams::set(std::string name, std::string value) {
    // A later line wins, as in main.cf.
    if (values_.count(name) == 0) order_.push_back(name);
    values_[std::move(name)] = std::move(value);
}

std::string expand_postfix_value(std::string_view value, const ParamLookup& lookup,
                                 const std::map<std::string, std::string, std::less<>>& literal) {
    return Expander(lookup, literal).expand(value, 0);
}

std::vector<std::string> split_postfix_list(std::string_view value) {
    std::vector<std::string> items;
    std::string item;
    int depth = 0;
    for (char ch : value) {
        if (ch == '{') ++depth;
        if (ch == '}' && depth > 0) --depth;
        if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')) {
            if (!item.empty()) items.push_back(std::move(item));
            item.clear();
            continue;
        }
        item += ch;
    }
    if (!item.empty()) items.push_back(std::move(item));
    return items;
}

}  // namespace smtpscreen
