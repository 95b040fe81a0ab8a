#pragma once
// The kinds of client smtpload plays, and the mix that decides which one each new
// session plays.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace smtpload {

// Starttls: greeting, EHLO, STARTTLS, a TLS handshake, close. Tls: a TLS handshake at once
// (a server that speaks TLS from the first byte, such as `openssl s_server`), close.
enum class Role : uint8_t { Clean, Pregreet, Dnsbl, Idle, Slow, Starttls, Tls };
constexpr size_t kRoleCount = 7;
constexpr std::array<Role, kRoleCount> kAllRoles = {Role::Clean, Role::Pregreet, Role::Dnsbl, Role::Idle,
                                                     Role::Slow,  Role::Starttls, Role::Tls};

constexpr bool speaks_tls(Role r) { return r == Role::Starttls || r == Role::Tls; }

constexpr size_t index_of(Role r) { return static_cast<size_t>(r); }
std::string_view role_name(Role role);
std::optional<Role> role_from_name(std::string_view name);

// Picks roles in proportion to their weights by smooth weighted round robin (as nginx
// balances upstreams): deterministic, and exact over any window of `total weight`
// sessions, so a short run still gets the asked-for mix instead of a random draw.
class Mix {
public:
    // "clean=90,pregreet=5,dnsbl=5"; weights are non-negative integers, at least one > 0.
    static std::optional<Mix> parse(std::string_view text, std::string& error);
    static Mix only(Role role);

    Role next();
    int weight(Role role) const { return weight_[index_of(role)]; }
    std::string describe() const;

private:
    std::array<int, kRoleCount> weight_{};
    std::array<int64_t, kRoleCount> current_{};
    int total_ = 0;
};

}  // namespace smtpload
