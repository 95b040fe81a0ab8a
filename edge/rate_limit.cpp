#include "edge/rate_limit.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace smtpscreen {

std::optional<RateLimit> parse_rate_limit(std::string_view text, std::string* why, std::string_view events) {
    auto fail = [&](std::string_view what) -> std::optional<RateLimit> {
        if (why) {
            *why = fmt::format("\"{}\" {} (use N/PERIOD, e.g. 30/1m for 30 {} a minute, or 0 for off)", text, what,
                               events);
        }
        return std::nullopt;
    };
    if (text == "0") return RateLimit{};
    size_t slash = text.find('/');
    if (slash == std::string_view::npos) return fail("is not a rate");
    std::string_view n = text.substr(0, slash);
    uint32_t count = 0;
    auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), count);
    if (n.empty() || ec != std::errc{} || end != n.data() + n.size()) {
        return fail(fmt::format("does not start with a number of {}", events));
    }
    if (count == 0) return fail(events == "connections" ? "allows no connection at all" : "counts to 0");
    auto period = parse_duration(text.substr(slash + 1));
    if (!period) return fail("has no duration after the slash");
    if (period->count() <= 0) return fail("has a period of 0");
    // The table forgets its least recently counted keys when it is full (edge/rate_table.h),
    // so a longer period would promise a memory it does not have under load.
    if (*period > Millis{86400000}) return fail("has a period longer than a day");
    return RateLimit{count, *period};
}

std::string format_rate_limit(const RateLimit& limit) {
    if (!limit.on()) return "0";
    return fmt::format("{}/{}", limit.count, format_duration(limit.period));
}

RateKey RateKey::client(const Endpoint& address) {
    RateKey key;
    auto raw = address.raw();
    std::memcpy(key.bytes.data(), raw.data(), raw.size());
    key.v6 = address.is_v6() ? 1 : 0;
    key.prefix = static_cast<uint8_t>(raw.size() * 8);
    key.scope = RateScope::Client;
    return key;
}

RateKey RateKey::network(const Endpoint& address, const NetworkPrefix& prefix) {
    RateKey key = client(address);
    const int len = key.v6 ? prefix.v6 : prefix.v4;
    for (size_t i = 0; i < key.bytes.size(); ++i) {
        const int keep = len - static_cast<int>(i) * 8;
        if (keep >= 8) continue;
        key.bytes[i] &= keep <= 0 ? 0 : static_cast<uint8_t>(0xff00 >> keep);
    }
    key.prefix = static_cast<uint8_t>(len);
    key.scope = RateScope::Network;
    return key;
}

std::string RateKey::to_string() const {
    char buf[INET6_ADDRSTRLEN] = "";
    inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
    if (scope == RateScope::Client) return buf;
    return fmt::format("{}/{}", buf, prefix);
}

}  // namespace smtpscreen
