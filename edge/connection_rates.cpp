#include "edge/connection_rates.h"

namespace smtpscreen {

RateVerdict SharedRateTable::count_now(const Endpoint& client, const RateRules& rules, uint64_t now_ms) {
    RateVerdict verdict;
    if (!rules.on()) return verdict;
    std::lock_guard lock(mutex_);
    if (!table_) table_ = std::make_unique<RateTable>(rules.table_size);
    // limits.rate_table_size may change at a reload; a smaller table forgets its oldest.
    if (table_->capacity() != rules.table_size) table_->set_capacity(rules.table_size);
    auto over = [&](RateScope scope, const RateLimit& limit, const RateKey& key) {
        if (!limit.on() || !table_->add(key, limit, now_ms).over || verdict.refused) return;
        verdict.refused = scope;
        verdict.limit = limit;
        verdict.key = key;
    };
    over(RateScope::Client, rules.per_client, RateKey::client(client));
    over(RateScope::Network, rules.per_network, RateKey::network(client, rules.network_prefix));
    if (verdict.refused) verdict.first = table_->first_refusal(verdict.key);
    return verdict;
}

void SharedRateTable::count(const Endpoint& client, const RateRules& rules, uint64_t now_ms, Done done) {
    done(count_now(client, rules, now_ms));
}

size_t SharedRateTable::keys_in_memory() const {
    std::lock_guard lock(mutex_);
    return table_ ? table_->size() : 0;
}

}  // namespace smtpscreen
