#pragma once
// The counts behind limits.per_client_rate and limits.per_network_rate: new connections
// per client address and per network within the current period, in a table of at most
// limits.rate_table_size keys (docs/design.md, "Edge defences"). No I/O, no clock (the
// caller gives the time), no lock (edge/connection_rates.h shares it between loops).
//
// A key's period starts at its first connection and lasts the limit's period; the next
// connection after that starts a new one (anvil's count per anvil_rate_time_unit). Every
// connection is counted, the refused ones too, so a burst is cut exactly at the limit.
//
// When the table is full, a new key takes the place of the one counted least recently:
// its count is forgotten (the worst that happens is that such a client gets a fresh
// period), and the table never grows past its size, however many addresses come.
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <utility>

#include "edge/rate_limit.h"

namespace smtpscreen {

class RateTable {
public:
    explicit RateTable(size_t capacity);
    RateTable(const RateTable&) = delete;
    RateTable& operator=(const RateTable&) = delete;

    struct Count {
        uint32_t seen = 0;  // connections of the key in its current period, this one included
        bool over = false;  // seen > limit.count: refuse it
    };
    // One more connection of `key` at `now_ms` (any clock in milliseconds that does not
    // go back by more than a loop turn), counted against `limit`, which must be on.
    Count add(const RateKey& key, const RateLimit& limit, uint64_t now_ms);
    // True the first time it is asked for a key within its current period, so that a
    // refused client is logged once per period, not once per connection.
    bool first_refusal(const RateKey& key);
    // Drops the key's count, if it has one (a banned client starts counting afresh).
    void forget(const RateKey& key);

    // A smaller size forgets the least recently counted keys beyond it at once.
    void set_capacity(size_t capacity);
    size_t capacity() const { return capacity_; }
    size_t size() const { return map_.size(); }
    bool contains(const RateKey& key) const { return map_.count(key) != 0; }

private:
    struct Entry {
        uint64_t period_start = 0;
        uint32_t seen = 0;
        bool refusal_logged = false;
        // The recency list, most recently counted first. A node keeps its address while
        // it is in the map, and when it is reused for another key (Map::extract).
        std::pair<const RateKey, Entry>* newer = nullptr;
        std::pair<const RateKey, Entry>* older = nullptr;
    };
    // A seeded hash: a client picks its IPv6 address within its /64, and must not be able
    // to pick addresses that share a bucket.
    struct KeyHash {
        uint64_t seed;
        size_t operator()(const RateKey& key) const noexcept;
    };
    using Map = std::unordered_map<RateKey, Entry, KeyHash>;
    using Node = Map::value_type;

    Node& find_or_make(const RateKey& key);
    void unlink(Node& node);
    void push_front(Node& node);
    void forget_oldest();

    size_t capacity_;
    Map map_;
    Node* newest_ = nullptr;
    Node* oldest_ = nullptr;
};

}  // namespace smtpscreen
