#include "dnsbl/query_table.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "edge/linear_probing.h"
#include "edge/seeded_hash.h"

namespace smtpscreen {

namespace {

// Small enough that an idle resolver holds next to nothing; the table grows by doubling
// at 3/4 full and shrinks by half below 1/8 (never under this).
constexpr std::size_t kMinSlots = 64;

}  // namespace

DnsblQueryTable::DnsblQueryTable() : seed_(random_hash_seed()), slots_(kMinSlots, nullptr) {}

std::size_t DnsblQueryTable::home(std::string_view address, const DnsblZone* zone) const {
    uint64_t h = hash_mix(seed_ ^ reinterpret_cast<uintptr_t>(zone));
    for (std::size_t i = 0; i < address.size(); i += 8) {
        uint64_t word = 0;
        std::memcpy(&word, address.data() + i, std::min<std::size_t>(8, address.size() - i));
        h = hash_mix(h ^ word);
    }
    return static_cast<std::size_t>(h) & (slots_.size() - 1);
}

DnsblQuery* DnsblQueryTable::find(std::string_view address, const DnsblZone* zone) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = home(address, zone); DnsblQuery* q = slots_[i]; i = (i + 1) & mask) {
        if (q->zone == zone && q->address() == address) return q;
    }
    return nullptr;
}

void DnsblQueryTable::insert(DnsblQuery& query) {
    if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.size() * 2);
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = home(query.address(), query.zone);
    while (slots_[i]) i = (i + 1) & mask;
    slots_[i] = &query;
    query.older = newest_;
    query.newer = nullptr;
    (newest_ ? newest_->newer : oldest_) = &query;
    newest_ = &query;
    ++size_;
}

void DnsblQueryTable::erase(DnsblQuery& query) {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = home(query.address(), query.zone);
    while (slots_[i] && slots_[i] != &query) i = (i + 1) & mask;
    if (!slots_[i]) return;  // not in the table
    erase_by_backward_shift(
        slots_, i, [](const DnsblQuery* q) { return q == nullptr; },
        [this](const DnsblQuery* q) { return home(q->address(), q->zone); });
    (query.older ? query.older->newer : oldest_) = query.newer;
    (query.newer ? query.newer->older : newest_) = query.older;
    query.older = query.newer = nullptr;
    --size_;
    if (slots_.size() > kMinSlots && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
}

void DnsblQueryTable::rehash(std::size_t capacity) {
    std::vector<DnsblQuery*> old(capacity, nullptr);
    old.swap(slots_);
    const std::size_t mask = slots_.size() - 1;
    for (DnsblQuery* q : old) {
        if (!q) continue;
        std::size_t i = home(q->address(), q->zone);
        while (slots_[i]) i = (i + 1) & mask;
        slots_[i] = q;
    }
}

}  // namespace smtpscreen
