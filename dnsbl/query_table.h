#pragma once
// The DNSBL queries one resolver has in flight, found by (client address, zone) so that
// concurrent lookups share one, and kept oldest first for their deadlines. Intrusive: a
// query is one allocation with its links in it, since every idle client whose lookup is
// in flight holds one (docs/design.md, "Memory per connection").
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace smtpscreen {

class DnsblSubscription;
// The zone a query asks of, with the resolver that asks: the resolver's (dns_client.cpp).
struct DnsblZone;

// One question, "<reversed address>.<zone>" type A. Its name is made when it is needed
// (to ask, to check the answer, to log a failure), not kept.
struct DnsblQuery {
    std::string_view address() const { return {reinterpret_cast<const char*>(address_bytes.data()), address_len}; }

    std::array<unsigned char, 16> address_bytes{};  // the client's, network order
    uint8_t address_len = 0;                         // 4 or 16
    // Answered or expired: out of the table, its subscribers told or about to be; it
    // waits for c-ares, which holds it until its callback, to let go of it.
    bool done = false;
    DnsblZone* zone = nullptr;
    uint64_t sent = 0;                  // uv_now() milliseconds
    DnsblSubscription* subscribers = nullptr;  // in the order they asked
    // The table's links.
    DnsblQuery* bucket_next = nullptr;
    DnsblQuery* older = nullptr;
    DnsblQuery* newer = nullptr;
};

class DnsblQueryTable {
public:
    DnsblQueryTable();
    DnsblQueryTable(const DnsblQueryTable&) = delete;
    DnsblQueryTable& operator=(const DnsblQueryTable&) = delete;

    DnsblQuery* find(std::string_view address, const DnsblZone* zone) const;
    // As the newest: queries go in in the order they are sent, and all have the same
    // timeout, so the oldest is the first one due.
    void insert(DnsblQuery& query);
    void erase(DnsblQuery& query);
    DnsblQuery* oldest() const { return oldest_; }
    bool empty() const { return size_ == 0; }

private:
    std::size_t bucket_of(std::string_view address, const DnsblZone* zone) const;
    void grow();

    // Seeded: the addresses are the clients', and an IPv6 client picks among 2^64 of its
    // own, so it must not be able to choose ones that share a bucket.
    uint64_t seed_;
    std::vector<DnsblQuery*> buckets_;  // a power of two of them, at least one per two queries
    std::size_t size_ = 0;
    DnsblQuery* oldest_ = nullptr;
    DnsblQuery* newest_ = nullptr;
};

}  // namespace smtpscreen
