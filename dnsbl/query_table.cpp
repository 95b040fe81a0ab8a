#include "dnsbl/query_table.h"

#include <algorithm>
#include <cstring>

#include "edge/seeded_hash.h"

namespace smtpscreen {

namespace {

constexpr std::size_t kFirstBuckets = 64;

}  // namespace

DnsblQueryTable::DnsblQueryTable() : seed_(random_hash_seed()), buckets_(kFirstBuckets, nullptr) {}

std::size_t DnsblQueryTable::bucket_of(std::string_view address, const DnsblZone* zone) const {
    uint64_t h = hash_mix(seed_ ^ reinterpret_cast<uintptr_t>(zone));
    for (std::size_t i = 0; i < address.size(); i += 8) {
        uint64_t word = 0;
        std::memcpy(&word, address.data() + i, std::min<std::size_t>(8, address.size() - i));
        h = hash_mix(h ^ word);
    }
    return static_cast<std::size_t>(h) & (buckets_.size() - 1);
}

DnsblQuery* DnsblQueryTable::find(std::string_view address, const DnsblZone* zone) const {
    for (DnsblQuery* q = buckets_[bucket_of(address, zone)]; q; q = q->bucket_next) {
        if (q->zone == zone && q->address() == address) return q;
    }
    return nullptr;
}

void DnsblQueryTable::insert(DnsblQuery& query) {
    // Two queries a bucket at most: chains stay short, and the buckets cost an idle
    // client 4 to 8 bytes where one a query costs 8 to 16.
    if (size_ + 1 > 2 * buckets_.size()) grow();
    auto& head = buckets_[bucket_of(query.address(), query.zone)];
    query.bucket_next = head;
    head = &query;
    query.older = newest_;
    query.newer = nullptr;
    (newest_ ? newest_->newer : oldest_) = &query;
    newest_ = &query;
    ++size_;
}

void DnsblQueryTable::erase(DnsblQuery& query) {
    for (DnsblQuery** link = &buckets_[bucket_of(query.address(), query.zone)]; *link; link = &(*link)->bucket_next) {
        if (*link != &query) continue;
        *link = query.bucket_next;
        (query.older ? query.older->newer : oldest_) = query.newer;
        (query.newer ? query.newer->older : newest_) = query.older;
        query.bucket_next = query.older = query.newer = nullptr;
        --size_;
        return;
    }
}

void DnsblQueryTable::grow() {
    std::vector<DnsblQuery*> old(buckets_.size() * 2, nullptr);
    old.swap(buckets_);
    for (DnsblQuery* chain : old) {
        while (chain) {
            DnsblQuery* next = chain->bucket_next;
            auto& head = buckets_[bucket_of(chain->address(), chain->zone)];
            chain->bucket_next = head;
            head = chain;
            chain = next;
        }
    }
}

}  // namespace smtpscreen
