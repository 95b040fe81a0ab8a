#pragma once
// The auto-ban of ban.after (docs/design.md, "Edge defences"): a session that failed a
// test says so once, and the N-th failure of its client within PERIOD bans the client
// for ban.time, doubled for each ban it had before (up to ban.max_time). The ban is
// written to the cache's BanStore, so that it outlives the process (lmdb) and every
// instance sees it (Redis); the connection check is in Session::client_identified.
#include <cstdint>

#include "core/address.h"
#include "edge/ban.h"

namespace smtpscreen {

class Worker;

// A failure of `client` under `rules` (pregreet, DNSBL, deep tests, rate limit, access
// reject, each acted on). Logs BANNED and counts the ban when it is one.
void count_failure_toward_ban(Worker& worker, const Endpoint& client, const BanRules& rules);

// Unix time in milliseconds, the clock the stored bans use.
int64_t ban_clock_ms();

}  // namespace smtpscreen
