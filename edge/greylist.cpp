#include "edge/greylist.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/text.h"
#include "edge/greylist_sender.h"
#include "edge/seeded_hash.h"

namespace smtpscreen {

std::string greylist_address(std::string_view address) {
    // The deprecated source route "@a,@b:user@dom" (RFC 5321 §4.1.2) names relays, not
    // the mailbox: postgrey sees the address Postfix extracted, which has none.
    if (!address.empty() && address.front() == '@') {
        const size_t colon = address.find(':');
        if (colon != std::string_view::npos) address.remove_prefix(colon + 1);
    }
    return ascii_lower(address);
}

std::string greylist_triplet(const Endpoint& client, const NetworkPrefix& prefix, std::string_view sender,
                             std::string_view recipient) {
    std::string key = RateKey::network(client, prefix).to_string();
    key += ':';
    key += greylist_sender_key(greylist_address(sender));
    key += ':';
    key += greylist_address(recipient);
    return key;
}

GreylistStep greylist_attempt(const std::optional<GreylistEntry>& entry, const GreylistRules& rules, int64_t now_ms) {
    if (!entry || now_ms >= entry->expires_ms) {
        // postgrey: a triplet seen for the first time, or whose retry came after the
        // retry window, starts a new wait.
        return {GreylistOutcome::New, {now_ms, false, now_ms + rules.retry_window.count()}};
    }
    if (entry->passed) {
        // Every use of a triplet that passed keeps it for another greylist.ttl.
        return {GreylistOutcome::Known, {entry->first_seen_ms, true, now_ms + rules.ttl.count()}};
    }
    // An early retry does not restart the wait: a client that retries every minute
    // passes greylist.delay after its first attempt, as with postgrey.
    if (now_ms - entry->first_seen_ms < rules.delay.count()) return {GreylistOutcome::TooEarly, *entry};
    return {GreylistOutcome::Retried, {entry->first_seen_ms, true, now_ms + rules.ttl.count()}};
}

// ---------------------------------------------------------------- the table

size_t GreylistTable::KeyHash::operator()(const std::string& key) const noexcept {
    uint64_t h = hash_mix(seed ^ key.size());
    size_t i = 0;
    for (; i + 8 <= key.size(); i += 8) {
        uint64_t chunk = 0;
        std::memcpy(&chunk, key.data() + i, 8);
        h = hash_mix(h ^ chunk);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, key.data() + i, key.size() - i);
    return static_cast<size_t>(hash_mix(h ^ tail));
}

GreylistTable::GreylistTable(size_t capacity)
    : capacity_(capacity < 1 ? 1 : capacity), map_(0, KeyHash{random_hash_seed()}) {}

GreylistStep GreylistTable::attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms,
                                    std::string* forgotten) {
    auto it = map_.find(triplet);
    if (it != map_.end()) {
        const GreylistStep step = greylist_attempt(it->second.entry, rules, now_ms);
        it->second.entry = step.entry;
        recency_.splice(recency_.end(), recency_, it->second.recency);
        return step;
    }
    const GreylistStep step = greylist_attempt(std::nullopt, rules, now_ms);
    insert(triplet, step.entry, forgotten);
    return step;
}

void GreylistTable::restore(const std::string& triplet, const GreylistEntry& entry, std::string* forgotten) {
    auto it = map_.find(triplet);
    if (it != map_.end()) {
        it->second.entry = entry;
        recency_.splice(recency_.end(), recency_, it->second.recency);
        return;
    }
    insert(triplet, entry, forgotten);
}

GreylistTable::Slot& GreylistTable::insert(const std::string& triplet, const GreylistEntry& entry,
                                           std::string* forgotten) {
    if (map_.size() >= capacity_) forget_oldest(forgotten);
    auto placed = map_.emplace(triplet, Slot{entry, {}}).first;
    placed->second.recency = recency_.insert(recency_.end(), &placed->first);
    return placed->second;
}

void GreylistTable::set_capacity(size_t capacity, std::vector<std::string>* forgotten) {
    capacity_ = capacity < 1 ? 1 : capacity;
    while (map_.size() > capacity_) {
        std::string gone;
        forget_oldest(&gone);
        if (forgotten) forgotten->push_back(std::move(gone));
    }
}

void GreylistTable::forget_oldest(std::string* forgotten) {
    if (recency_.empty()) return;
    auto it = map_.find(*recency_.front());
    recency_.pop_front();
    if (forgotten) *forgotten = it->first;
    map_.erase(it);
}

// ---------------------------------------------------------------- shared by the loops

GreylistStep SharedGreylistTable::attempt_now(const std::string& triplet, const GreylistRules& rules,
                                              int64_t now_ms) {
    std::lock_guard lock(mutex_);
    if (!table_) {
        table_ = std::make_unique<GreylistTable>(rules.table_size);
        load_archive(now_ms);
    }
    // greylist.table_size may change at a reload; a smaller table forgets its oldest.
    if (table_->capacity() != rules.table_size) {
        std::vector<std::string> gone;
        table_->set_capacity(rules.table_size, &gone);
        if (archive_) {
            for (const auto& triplet : gone) archive_->forget_triplet(triplet);
        }
    }
    std::string forgotten;
    const GreylistStep step = table_->attempt(triplet, rules, now_ms, &forgotten);
    if (archive_) {
        if (!forgotten.empty()) archive_->forget_triplet(forgotten);
        if (step.outcome != GreylistOutcome::TooEarly) archive_->keep_triplet(triplet, step.entry);
    }
    return step;
}

// The archive's triplets, oldest first by when they lapse (the nearest thing to when
// they were last used that an entry keeps); those that lapsed, and those the table has
// no room for, leave the archive too.
void SharedGreylistTable::load_archive(int64_t now_ms) {
    if (!archive_) return;
    std::vector<std::pair<std::string, GreylistEntry>> kept;
    std::vector<std::string> lapsed;
    archive_->load_triplets([&](const std::string& triplet, const GreylistEntry& entry) {
        if (entry.expires_ms <= now_ms) lapsed.push_back(triplet);
        else kept.emplace_back(triplet, entry);
    });
    std::sort(kept.begin(), kept.end(),
              [](const auto& a, const auto& b) { return a.second.expires_ms < b.second.expires_ms; });
    for (const auto& [triplet, entry] : kept) {
        std::string forgotten;
        table_->restore(triplet, entry, &forgotten);
        if (!forgotten.empty()) lapsed.push_back(std::move(forgotten));
    }
    for (const auto& triplet : lapsed) archive_->forget_triplet(triplet);
}

void SharedGreylistTable::attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms, Done done) {
    done(attempt_now(triplet, rules, now_ms).outcome);
}

size_t SharedGreylistTable::entries_in_memory() const {
    std::lock_guard lock(mutex_);
    return table_ ? table_->size() : 0;
}

}  // namespace smtpscreen
