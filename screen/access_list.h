#pragma once
// access.file: "ip[/len] permit|reject" per line, '#' comments, first match wins.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"

namespace smtpscreen {

enum class AccessVerdict : uint8_t { Permit, Reject };
struct AccessRule {
    Cidr network;
    AccessVerdict verdict;
    friend bool operator==(const AccessRule&, const AccessRule&) = default;
};

// Parses the file's text; each problem is appended to errors as "FILE:LINE: what is wrong".
std::vector<AccessRule> parse_access_list(std::string_view text, const std::string& filename,
                                          std::vector<std::string>& errors);
std::optional<AccessVerdict> match_access(const std::vector<AccessRule>& rules, const Endpoint& client);

}  // namespace smtpscreen
