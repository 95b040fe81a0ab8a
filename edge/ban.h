#pragma once
// The values of ban.after, ban.time, ban.max_time and ban.action, one client's ban as it
// is stored, and the rule that makes the next ban from the last one (docs/design.md,
// "Edge defences"). Plain values, no I/O, no clock: the caller gives the time.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

#include "core/duration.h"
#include "edge/rate_limit.h"

namespace smtpscreen {

// ban.action: what a banned client gets at connect. Only drop is built; tarpit is a
// word the key knows so that it can say so.
enum class BanAction : uint8_t { Drop, Tarpit };
inline constexpr std::array<std::pair<std::string_view, BanAction>, 2> kBanActionNames{{
    {"drop", BanAction::Drop}, {"tarpit", BanAction::Tarpit}}};

struct BanRules {
    RateLimit after;             // N failures within PERIOD ban the client; off when 0
    Millis time{3600000};        // the first ban
    Millis max_time{7 * 86400000LL};
    BanAction action = BanAction::Drop;
    size_t table_size = 100000;  // clients whose failures are counted at once (limits.rate_table_size)

    bool on() const { return after.on(); }
};

// One client's ban. The record outlives the ban by ban.max_time (keep_until_ms), so that
// a client banned again within that time gets twice the last ban: fail2ban's
// bantime.increment, with bantime.maxtime as the cap and the memory.
struct Ban {
    int64_t until_ms = 0;       // Unix time in milliseconds at which the ban ends
    int64_t keep_until_ms = 0;  // when the record may be forgotten (the ban and its repeats)
    uint32_t count = 0;         // bans of this client in a row, this one included: 1 for the first
    uint32_t failures = 0;      // the failures that led to it

    bool in_force(int64_t now_ms) const { return until_ms > now_ms; }
    friend bool operator==(const Ban&, const Ban&) = default;
};

// The ban a client earns at now_ms with `failures` failures, after `previous` (its last
// ban, if still remembered): ban.time, doubled for each ban before it, at most
// ban.max_time.
Ban next_ban(const std::optional<Ban>& previous, const BanRules& rules, int64_t now_ms, uint32_t failures);

}  // namespace smtpscreen
