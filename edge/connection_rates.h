#pragma once
// Where new connections are counted against limits.per_client_rate and
// limits.per_network_rate (docs/design.md, "Edge defences"). The interface is
// asynchronous, as VerdictCache's is, so that a store every instance shares (Redis)
// fits without touching sessions; the in-process table answers inline.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "edge/rate_limit.h"
#include "edge/rate_table.h"

namespace smtpscreen {

struct RateVerdict {
    // The limit the connection is over (the client's first when both are): nullopt lets
    // it in.
    std::optional<RateScope> refused;
    RateLimit limit;   // that limit
    RateKey key;       // what was over it: the client, or its network
    // The first refusal of that key in its period: log it. A flood costs one line per
    // client (or network) and period, as anvil's warnings do.
    bool first = false;
};

class ConnectionRates {
public:
    using Done = std::function<void(const RateVerdict&)>;
    virtual ~ConnectionRates() = default;

    // Counts one new connection from `client` against the client's limit and its
    // network's (each that is on), at `now_ms` on a monotonic clock. Every connection
    // is counted, the refused ones too. `done` runs exactly once, inline or later from
    // the loop; a store that asks over the network must answer within a bounded time
    // (letting the client in when it cannot tell), since the session waits for it.
    virtual void count(const Endpoint& client, const RateRules& rules, uint64_t now_ms, Done done) = 0;
    // Addresses and networks counted in this process's memory now, for the metrics
    // (a shared store keeps its counts elsewhere). Any thread.
    virtual size_t keys_in_memory() const { return 0; }
};

// One table in this process, shared by every loop thread (a client's connections may
// land on any of them with SO_REUSEPORT), addresses and networks together in it.
class SharedRateTable final : public ConnectionRates {
public:
    void count(const Endpoint& client, const RateRules& rules, uint64_t now_ms, Done done) override;
    size_t keys_in_memory() const override;

    // The same count, answered here and now (what count() hands to `done`).
    RateVerdict count_now(const Endpoint& client, const RateRules& rules, uint64_t now_ms);

private:
    mutable std::mutex mutex_;
    std::unique_ptr<RateTable> table_;  // made at the first count: no memory while the limits are off
};

}  // namespace smtpscreen
