#pragma once
// The Redis cache from outside the daemon: `smtpscreen cache ...` and --check's probe.
// Plain blocking hiredis with a timeout on every step, never used on an event loop.
#include <memory>
#include <optional>
#include <string>

#include "cache/redis_settings.h"
#include "cache/verdict_cache.h"

namespace smtpscreen {

// Connects (AUTH, SELECT as set) and waits at most `timeout` for each reply. The
// records are the daemon's (cache/redis_record.h); for_each lists the keys that start
// with the prefix in address order, erase_all deletes those keys and no other (never
// FLUSHDB: the database may hold other programs' keys). Throws std::runtime_error
// naming the server and what to do when it cannot be reached or refuses a command.
// The bans (cache/ban_record.h) come with them; the verdicts' for_each skips their keys.
CacheStores open_redis_cache_blocking(const RedisSettings& settings, Millis timeout);

// nullopt when Redis answers PING (after AUTH and SELECT) within `timeout`; otherwise
// why not, in words.
std::optional<std::string> probe_redis(const RedisSettings& settings, Millis timeout);

}  // namespace smtpscreen
