#include "bench/role.h"

#include <charconv>

namespace smtpload {

std::string_view role_name(Role role) {
    switch (role) {
    case Role::Clean: return "clean";
    case Role::Pregreet: return "pregreet";
    case Role::Dnsbl: return "dnsbl";
    case Role::Idle: return "idle";
    case Role::Slow: return "slow";
    case Role::Starttls: return "starttls";
    case Role::Tls: return "tls";
    }
    return "?";
}

std::optional<Role> role_from_name(std::string_view name) {
    for (Role r : kAllRoles) {
        if (role_name(r) == name) return r;
    }
    return std::nullopt;
}

Mix Mix::only(Role role) {
    Mix m;
    m.weight_[index_of(role)] = 1;
    m.total_ = 1;
    return m;
}

std::optional<Mix> Mix::parse(std::string_view text, std::string& error) {
    Mix m;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = text.find(',', pos);
        std::string_view item = text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        pos = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (item.empty()) continue;
        size_t eq = item.find('=');
        // A bare role name counts as weight 1, so "--mix idle" works.
        std::string_view name = item.substr(0, eq);
        int weight = 1;
        if (eq != std::string_view::npos) {
            std::string_view w = item.substr(eq + 1);
            auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), weight);
            if (ec != std::errc() || end != w.data() + w.size() || weight < 0 || weight > 1000000) {
                error = "bad weight in --mix item \"" + std::string(item) + "\"";
                return std::nullopt;
            }
        }
        auto role = role_from_name(name);
        if (!role) {
            error = "unknown role \"" + std::string(name) + "\" in --mix (clean, pregreet, dnsbl, idle, slow, starttls, tls)";
            return std::nullopt;
        }
        m.weight_[index_of(*role)] = weight;
    }
    for (int w : m.weight_) m.total_ += w;
    if (m.total_ == 0) {
        error = "--mix gives no role a weight above 0";
        return std::nullopt;
    }
    return m;
}

Role Mix::next() {
    size_t best = 0;
    for (size_t i = 0; i < kRoleCount; ++i) {
        current_[i] += weight_[i];
        if (weight_[i] > 0 && (weight_[best] == 0 || current_[i] > current_[best])) best = i;
    }
    current_[best] -= total_;
    return static_cast<Role>(best);
}

std::string Mix::describe() const {
    std::string out;
    for (Role r : kAllRoles) {
        if (weight(r) == 0) continue;
        if (!out.empty()) out += ',';
        out += std::string(role_name(r)) + "=" + std::to_string(weight(r));
    }
    return out;
}

}  // namespace smtpload
