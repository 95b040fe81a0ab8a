#include "cache/redis_record.h"

#include <algorithm>
#include <charconv>
#include <limits>

namespace smtpscreen {

namespace {

// A pass_until of the record (Unix seconds) in the milliseconds the hash holds.
std::string millis_text(int64_t seconds) {
    constexpr int64_t kLast = std::numeric_limits<int64_t>::max() / 1000;
    return std::to_string(std::min(seconds, kLast) * 1000);
}

std::optional<int64_t> parse_millis(std::string_view v) {
    int64_t ms = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
    if (ec != std::errc() || end != v.data() + v.size() || ms < 0) return std::nullopt;
    return ms;
}

}  // namespace

std::string redis_record_key(std::string_view prefix, std::string_view client_ip) {
    std::string key(prefix);
    key += client_ip;
    return key;
}

std::optional<TestResults> decode_redis_record(
    const std::vector<std::pair<std::string_view, std::string_view>>& fields) {
    if (fields.empty()) return std::nullopt;
    TestResults r;
    for (const auto& [name, value] : fields) {
        for (size_t t = 0; t < kTestCount; ++t) {
            if (name != test_name(static_cast<Test>(t))) continue;
            // Unix seconds, as the record keeps them; a pass that ends within a second
            // ends at that second's start.
            if (auto ms = parse_millis(value)) r.pass_until[t] = *ms / 1000;
        }
    }
    return r;
}

std::vector<RedisCommand> redis_store_commands(std::string_view key, const TestResults& results) {
    RedisCommand hset{"HSET", std::string(key)};
    int64_t latest = 0;
    for (size_t t = 0; t < kTestCount; ++t) {
        const int64_t until = results.pass_until[t];
        if (until <= 0) continue;
        hset.emplace_back(test_name(static_cast<Test>(t)));
        hset.push_back(millis_text(until));
        latest = std::max(latest, until);
    }
    if (latest == 0) return {{"DEL", std::string(key)}};
    // DEL first: a field of an earlier record that this one no longer has must go, and
    // MULTI keeps another instance's store of the same client from landing in between.
    return {{"MULTI"},
            {"DEL", std::string(key)},
            std::move(hset),
            {"PEXPIREAT", std::string(key), millis_text(latest)},
            {"EXEC"}};
}

std::vector<RedisCommand> redis_hello_commands(const std::string& password, int db) {
    std::vector<RedisCommand> out;
    if (!password.empty()) out.push_back({"AUTH", password});
    if (db != 0) out.push_back({"SELECT", std::to_string(db)});
    out.push_back({"PING"});
    return out;
}

std::string redis_prefix_pattern(std::string_view prefix) {
    std::string pattern;
    for (char ch : prefix) {
        if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') pattern += '\\';
        pattern += ch;
    }
    pattern += '*';
    return pattern;
}

}  // namespace smtpscreen
