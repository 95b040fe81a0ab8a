#pragma once
// A client's record in Redis, as other tools may read and pre-seed it (smtpscreen.ini(5),
// "REDIS RECORDS"; README, "Redis"): one hash per client at <prefix><client address>,
// one field per passed test, named as the logs name the tests (pregreet, dnsbl,
// pipelining, non_smtp, bare_newline), holding the Unix time in milliseconds at which
// that pass expires. A test never passed has no field. The key itself expires
// (PEXPIREAT) with the last of its passes, so Redis drops a record nobody needs.
//
// Also the commands that read and write it, shared by the daemon's asynchronous client
// and the blocking one of the cache tools.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "screen/test_results.h"

namespace smtpscreen {

using RedisCommand = std::vector<std::string>;

std::string redis_record_key(std::string_view prefix, std::string_view client_ip);

// HGETALL's field/value pairs back to a record; nullopt for no fields (no key). Fields
// of names this version does not know (a later version's tests) are skipped, and so is
// a value that is not a whole number of milliseconds: that test reads as never passed.
std::optional<TestResults> decode_redis_record(const std::vector<std::pair<std::string_view, std::string_view>>& fields);

// Replaces the whole record in one transaction: MULTI, DEL, HSET of the passes,
// PEXPIREAT at the latest pass, EXEC (the reply to the last one tells how it went).
// For a record without any pass, a lone DEL.
std::vector<RedisCommand> redis_store_commands(std::string_view key, const TestResults& results);

// What every (re)connection sends first: AUTH when there is a password, SELECT when the
// database is not 0, and PING, whose PONG says the connection is ready.
std::vector<RedisCommand> redis_hello_commands(const std::string& password, int db);

// A SCAN MATCH pattern that matches exactly the keys starting with prefix (Redis glob
// characters in it are escaped).
std::string redis_prefix_pattern(std::string_view prefix);

}  // namespace smtpscreen
