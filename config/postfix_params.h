#pragma once
// Postfix's main.cf parameters as `postconf -n` prints them, and Postfix's $name
// expansion, for smtpscreen --from-postconf (config/from_postconf.h). Values stay as
// written; expand() resolves them the way Postfix does when it reads main.cf.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen {

class PostfixParams {
public:
    // "name = value" lines. As in main.cf, a line that starts with white space continues
    // the one before it, and blank lines and lines starting with '#' are skipped. A line
    // without '=' is kept in unreadable_lines(), so that the caller can say so.
    static PostfixParams parse(std::string_view text);

    // The value as written (unexpanded), when the parameter is set.
    std::optional<std::string> raw(std::string_view name) const;
    bool has(std::string_view name) const { return raw(name).has_value(); }
    // Every parameter set, in input order.
    const std::vector<std::string>& names() const { return order_; }
    const std::vector<std::string>& unreadable_lines() const { return unreadable_; }

    void set(std::string name, std::string value);

private:
    std::map<std::string, std::string, std::less<>> values_;
    std::vector<std::string> order_;
    std::vector<std::string> unreadable_;
};

// A parameter's unexpanded value, or nullopt when it is neither set nor known.
using ParamLookup = std::function<std::optional<std::string>(std::string_view name)>;

// `value` with $name, ${name}, $(name), ${name?text}, ${name:text} and
// ${name?{text}:{text}} expanded as Postfix does (postconf(5), "Parameter expansion");
// "$$" is a literal '$'. A name in `literal` becomes its text as it is, not expanded
// further (--from-postconf keeps $myhostname as smtpscreen's own $hostname). A name
// the lookup does not know expands to nothing, as in Postfix; so does a name inside its
// own expansion. Nesting stops at a depth of 20, and one expansion at 10,000 lookups and
// 64 KiB of text, so that no main.cf makes it run away.
std::string expand_postfix_value(std::string_view value, const ParamLookup& lookup,
                                 const std::map<std::string, std::string, std::less<>>& literal = {});

// A Postfix list (main.cf's "comma or white space" separated items), with "{...}"
// grouping kept in one item: "CONNECT GET regexp:{{/^[^A-Z]/ Bogus}}" is three items.
std::vector<std::string> split_postfix_list(std::string_view value);

}  // namespace smtpscreen
