#pragma once
// Where failed tests are counted against ban.after (docs/design.md, "Edge defences"):
// one table in this process, shared by every loop thread, of at most
// limits.rate_table_size client addresses. It is edge/rate_table.h's table, counting
// failures instead of connections, so a botnet of any size costs the same memory: when
// the table is full, the client that failed least recently is forgotten.
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "core/address.h"
#include "edge/ban.h"
#include "edge/rate_table.h"

namespace smtpscreen {

class FailureCounts {
public:
    // One more failure of `client` at `now_ms` (monotonic). When it is the N-th within
    // PERIOD of ban.after, returns N and forgets the count (the ban takes over); nullopt
    // otherwise, and always while ban.after is off.
    std::optional<uint32_t> fail(const Endpoint& client, const BanRules& rules, uint64_t now_ms);
    size_t size() const;

private:
    mutable std::mutex mutex_;
    std::unique_ptr<RateTable> table_;  // made at the first failure counted
};

}  // namespace smtpscreen
