#pragma once
// Counters in Redis that live one period from their first count: the connection rate
// limits' (cache/redis_rates.h) and the failures toward ban.after
// (cache/redis_failures.h). Each count is an INCR of the key and a PEXPIRE of the period
// with NX, inside one MULTI/EXEC: NX sets the expiry only on a key that has none, the
// one INCR has just created, so a period starts at a key's first count and Redis ends
// it, and the transaction keeps a counter from ever living without one (NX needs Redis
// 7.0 or later).
#include <hiredis/hiredis.h>

#include <optional>
#include <string>
#include <vector>

#include "cache/redis_record.h"
#include "core/duration.h"

namespace smtpscreen {

// Appends the count of `key` for a period of `period` to a transaction being built
// (after its MULTI, before its EXEC).
void append_period_count(std::vector<RedisCommand>& commands, std::string key, Millis period);

// What is wrong with EXEC's reply to a transaction of `keys` such counts (each an INCR's
// count, then PEXPIRE's 0 or 1), in words; nullopt when it is as expected, and then
// period_count reads it.
std::optional<std::string> period_counts_error(const redisReply& reply, size_t keys);
// The count of the i-th key of a reply period_counts_error found good.
long long period_count(const redisReply& reply, size_t i);

}  // namespace smtpscreen
