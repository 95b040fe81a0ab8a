#include "edge/failure_counts.h"

namespace smtpscreen {

std::optional<uint32_t> FailureCounts::fail_now(const Endpoint& client, const BanRules& rules, uint64_t now_ms) {
    if (!rules.on()) return std::nullopt;
    std::lock_guard lock(mutex_);
    if (!table_) table_ = std::make_unique<RateTable>(rules.table_size);
    if (table_->capacity() != rules.table_size) table_->set_capacity(rules.table_size);
    const RateKey key = RateKey::client(client);
    const RateTable::Count count = table_->add(key, rules.after, now_ms);
    if (count.seen < rules.after.count) return std::nullopt;
    table_->forget(key);
    return count.seen;
}

void FailureCounts::fail(const Endpoint& client, const BanRules& rules, uint64_t now_ms, Done done) {
    done(fail_now(client, rules, now_ms));
}

size_t FailureCounts::size() const {
    std::lock_guard lock(mutex_);
    return table_ ? table_->size() : 0;
}

}  // namespace smtpscreen
