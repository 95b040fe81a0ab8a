#include "edge/rate_table.h"

#include <cstring>

#include "edge/seeded_hash.h"

namespace smtpscreen {

size_t RateTable::KeyHash::operator()(const RateKey& key) const noexcept {
    uint64_t high = 0, low = 0;
    std::memcpy(&high, key.bytes.data(), 8);
    std::memcpy(&low, key.bytes.data() + 8, 8);
    const uint64_t meta = uint64_t{key.v6} | uint64_t{key.prefix} << 8 | uint64_t(key.scope) << 16;
    return static_cast<size_t>(hash_mix(hash_mix(hash_mix(seed ^ meta) ^ high) ^ low));
}

RateTable::RateTable(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity), map_(0, KeyHash{random_hash_seed()}) {}

RateTable::Count RateTable::add(const RateKey& key, const RateLimit& limit, uint64_t now_ms) {
    Node& node = find_or_make(key);
    Entry& e = node.second;
    // Each loop caches its own "now", so another loop's may be a little behind the time
    // a period started at: that is no time passed, not a wrap-around.
    const uint64_t elapsed = now_ms > e.period_start ? now_ms - e.period_start : 0;
    if (e.seen == 0 || elapsed >= static_cast<uint64_t>(limit.period.count())) {
        e.period_start = now_ms;
        e.seen = 0;
        e.refusal_logged = false;
    }
    if (e.seen < UINT32_MAX) ++e.seen;
    return {e.seen, e.seen > limit.count};
}

bool RateTable::first_refusal(const RateKey& key) {
    auto it = map_.find(key);
    if (it == map_.end() || it->second.refusal_logged) return false;
    it->second.refusal_logged = true;
    return true;
}

void RateTable::forget(const RateKey& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    unlink(*it);
    map_.erase(it);
}

void RateTable::set_capacity(size_t capacity) {
    capacity_ = capacity < 1 ? 1 : capacity;
    while (map_.size() > capacity_) forget_oldest();
}

RateTable::Node& RateTable::find_or_make(const RateKey& key) {
    auto it = map_.find(key);
    if (it != map_.end()) {
        unlink(*it);
        push_front(*it);
        return *it;
    }
    Node* node = nullptr;
    if (map_.size() >= capacity_) {
        // Full: the least recently counted node takes the new key. Its memory is reused
        // as it is, so a flood of new addresses allocates nothing once the table is full.
        Node* old = oldest_;
        unlink(*old);
        auto handle = map_.extract(map_.find(old->first));
        handle.key() = key;
        handle.mapped() = Entry{};
        node = &*map_.insert(std::move(handle)).position;
    } else {
        node = &*map_.emplace(key, Entry{}).first;
    }
    push_front(*node);
    return *node;
}

void RateTable::unlink(Node& node) {
    Entry& e = node.second;
    (e.newer ? e.newer->second.older : newest_) = e.older;
    (e.older ? e.older->second.newer : oldest_) = e.newer;
    e.newer = e.older = nullptr;
}

void RateTable::push_front(Node& node) {
    node.second.older = newest_;
    node.second.newer = nullptr;
    (newest_ ? newest_->second.newer : oldest_) = &node;
    newest_ = &node;
}

void RateTable::forget_oldest() {
    Node* old = oldest_;
    unlink(*old);
    map_.erase(map_.find(old->first));
}

}  // namespace smtpscreen
