#pragma once
// Where failed tests are counted against ban.after (docs/design.md, "Edge defences").
// The interface is asynchronous, as ConnectionRates's is, so that a store every
// instance shares (Redis: cache/redis_failures.h) fits; the in-process table answers
// inline.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "core/address.h"
#include "edge/ban.h"
#include "edge/rate_table.h"

namespace smtpscreen {

class FailureCounter {
public:
    // N when the failure counted is the one that bans (the N-th of ban.after's N/PERIOD);
    // nullopt otherwise.
    using Done = std::function<void(std::optional<uint32_t> failures)>;
    virtual ~FailureCounter() = default;

    // One more failure of `client` at `now_ms` (monotonic). `done` runs exactly once,
    // inline or later from the loop; a store that asks over the network answers within
    // a bounded time. Nothing is counted while ban.after is off.
    virtual void fail(const Endpoint& client, const BanRules& rules, uint64_t now_ms, Done done) = 0;
};

// One table in this process, shared by every loop thread, of at most
// limits.rate_table_size client addresses. It is edge/rate_table.h's table, counting
// failures instead of connections, so a botnet of any size costs the same memory: when
// the table is full, the client that failed least recently is forgotten.
class FailureCounts final : public FailureCounter {
public:
    void fail(const Endpoint& client, const BanRules& rules, uint64_t now_ms, Done done) override;

    // The same count, answered here and now: at the N-th failure within PERIOD, N, and
    // the client's count is forgotten (the ban takes over).
    std::optional<uint32_t> fail_now(const Endpoint& client, const BanRules& rules, uint64_t now_ms);
    size_t size() const;

private:
    mutable std::mutex mutex_;
    std::unique_ptr<RateTable> table_;  // made at the first failure counted
};

}  // namespace smtpscreen
