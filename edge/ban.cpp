#include "edge/ban.h"

#include <algorithm>
#include <cstdint>

namespace smtpscreen {

Ban next_ban(const std::optional<Ban>& previous, const BanRules& rules, int64_t now_ms, uint32_t failures) {
    Ban ban;
    const bool remembered = previous && previous->keep_until_ms > now_ms;
    ban.count = 1;
    if (remembered) ban.count = previous->count == UINT32_MAX ? UINT32_MAX : std::max<uint32_t>(previous->count, 1) + 1;
    const int64_t cap = std::max<int64_t>(rules.max_time.count(), 0);
    int64_t length = std::min<int64_t>(std::max<int64_t>(rules.time.count(), 0), cap);
    // Doubling stops at the cap; past 62 doublings any positive length would overflow.
    for (uint32_t i = 1; i < ban.count && length < cap; ++i) length = std::min(length * 2, cap);
    ban.until_ms = now_ms + length;
    ban.keep_until_ms = ban.until_ms + cap;
    ban.failures = failures;
    return ban;
}

}  // namespace smtpscreen
