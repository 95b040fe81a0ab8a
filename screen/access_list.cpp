#include "screen/access_list.h"

#include <fmt/format.h>

#include "core/text.h"

namespace smtpscreen {

namespace {

std::vector<std::string_view> split_fields(std::string_view s) {
    std::vector<std::string_view> fields;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
        size_t start = i;
        while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
        if (i > start) fields.push_back(s.substr(start, i - start));
    }
    return fields;
}

std::optional<AccessVerdict> parse_verdict(std::string_view word) {
    // Case-insensitive as in Postfix access tables.
    if (iequals(word, "permit")) return AccessVerdict::Permit;
    if (iequals(word, "reject")) return AccessVerdict::Reject;
    return std::nullopt;
}

}  // namespace

std::vector<AccessRule> parse_access_list(std::string_view text, const std::string& filename,
                                          std::vector<std::string>& errors) {
    std::vector<AccessRule> rules;
    int lineno = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++lineno;

        line = trim(line.substr(0, line.find('#')), " \t\r");
        if (line.empty()) continue;
        auto fields = split_fields(line);
        auto where = fmt::format("{}:{}: ", filename, lineno);
        if (fields.size() != 2) {
            errors.push_back(where + fmt::format("\"{}\" is not a rule (use \"ip[/len] permit\" or \"ip[/len] reject\")",
                                                 line));
            continue;
        }
        std::string why;
        auto network = Cidr::parse(fields[0], &why);
        if (!network) {
            errors.push_back(where + why);
            continue;
        }
        auto verdict = parse_verdict(fields[1]);
        if (!verdict) {
            errors.push_back(where + fmt::format("\"{}\" is not an action (use permit or reject)", fields[1]));
            continue;
        }
        rules.push_back(AccessRule{*network, *verdict});
    }
    return rules;
}

std::optional<AccessVerdict> match_access(const std::vector<AccessRule>& rules, const Endpoint& client) {
    for (const auto& rule : rules) {
        if (rule.network.contains(client)) return rule.verdict;
    }
    return std::nullopt;
}

}  // namespace smtpscreen
