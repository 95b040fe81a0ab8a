#include "cache/ban_record.h"

#include <charconv>
#include <cstdint>
#include <type_traits>

namespace smtpscreen {
namespace {

template <typename T>
void put(std::string& out, T v) {
    const auto u = static_cast<uint64_t>(v);
    for (size_t b = 0; b < sizeof(T); ++b) out += static_cast<char>((u >> (8 * b)) & 0xff);
}

template <typename T>
T get(const unsigned char*& p) {
    uint64_t x = 0;
    for (size_t b = 0; b < sizeof(T); ++b) x |= static_cast<uint64_t>(p[b]) << (8 * b);
    p += sizeof(T);
    return static_cast<T>(x);
}

template <typename T>
std::optional<T> number(std::string_view v) {
    T n{};
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
    if constexpr (std::is_signed_v<T>) {
        if (n < 0) return std::nullopt;
    }
    return n;
}

constexpr size_t kLmdbBanSize = 1 + 8 + 8 + 4 + 4;

}  // namespace

std::string lmdb_ban_key(std::string_view client_ip) {
    std::string key(kBanKeyPrefix);
    key += client_ip;
    return key;
}

bool is_ban_key(std::string_view key) { return key.substr(0, kBanKeyPrefix.size()) == kBanKeyPrefix; }

std::string encode_lmdb_ban(const Ban& ban) {
    std::string out;
    out += static_cast<char>(kLmdbBanVersion);
    put(out, ban.until_ms);
    put(out, ban.keep_until_ms);
    put(out, ban.count);
    put(out, ban.failures);
    return out;
}

std::optional<Ban> decode_lmdb_ban(std::string_view bytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() != kLmdbBanSize || p[0] != kLmdbBanVersion) return std::nullopt;
    ++p;
    Ban ban;
    ban.until_ms = get<int64_t>(p);
    ban.keep_until_ms = get<int64_t>(p);
    ban.count = get<uint32_t>(p);
    ban.failures = get<uint32_t>(p);
    return ban;
}

std::string redis_ban_key(std::string_view prefix, std::string_view client_ip) {
    std::string key(prefix);
    key += kBanKeyPrefix;
    key += client_ip;
    return key;
}

std::optional<Ban> decode_redis_ban(const std::vector<std::pair<std::string_view, std::string_view>>& fields) {
    std::optional<Ban> ban;
    uint32_t count = 1;
    uint32_t failures = 0;
    for (const auto& [name, value] : fields) {
        if (name == "until") {
            if (auto ms = number<int64_t>(value)) ban = Ban{*ms, *ms, 0, 0};
        } else if (name == "count") {
            if (auto n = number<uint32_t>(value)) count = *n;
        } else if (name == "failures") {
            if (auto n = number<uint32_t>(value)) failures = *n;
        }
    }
    if (!ban) return std::nullopt;
    // Redis forgets the key itself; until then the record counts as remembered. A tool
    // that seeds a ban with "until" alone makes a first ban.
    ban->keep_until_ms = INT64_MAX;
    ban->count = count;
    ban->failures = failures;
    return ban;
}

std::vector<RedisCommand> redis_ban_store_commands(std::string_view key, const Ban& ban) {
    return {{"MULTI"},
            {"HSET", std::string(key), "until", std::to_string(ban.until_ms), "count", std::to_string(ban.count),
             "failures", std::to_string(ban.failures)},
            {"PEXPIREAT", std::string(key), std::to_string(ban.keep_until_ms)},
            {"EXEC"}};
}

}  // namespace smtpscreen
