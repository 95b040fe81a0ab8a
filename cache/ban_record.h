#pragma once
// A ban as the stores keep it (smtpscreen.ini(5), "BANS"), next to the verdicts:
//  - lmdb: the key "ban:<address>" in the same file as the verdict records (no address
//    starts with "ban:"), holding a version byte, then until_ms and keep_until_ms as
//    int64 and count and failures as uint32, little-endian;
//  - Redis: a hash at <prefix>ban:<address> with the fields until (Unix time in
//    milliseconds at which the ban ends), count (bans in a row) and failures, expiring
//    (PEXPIREAT) once the record may be forgotten: ban.max_time after the ban's end.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/redis_record.h"
#include "edge/ban.h"

namespace smtpscreen {

inline constexpr std::string_view kBanKeyPrefix = "ban:";
constexpr uint8_t kLmdbBanVersion = 0xb1;

std::string lmdb_ban_key(std::string_view client_ip);
bool is_ban_key(std::string_view key);
std::string encode_lmdb_ban(const Ban& ban);
std::optional<Ban> decode_lmdb_ban(std::string_view bytes);

std::string redis_ban_key(std::string_view prefix, std::string_view client_ip);
// HGETALL's field/value pairs; nullopt without an until field.
std::optional<Ban> decode_redis_ban(const std::vector<std::pair<std::string_view, std::string_view>>& fields);
// MULTI, HSET of the three fields, PEXPIREAT at keep_until_ms, EXEC.
std::vector<RedisCommand> redis_ban_store_commands(std::string_view key, const Ban& ban);

}  // namespace smtpscreen
