#pragma once
// The DNSBL queries one resolver has in flight, found by (client address, zone) so that
// concurrent lookups share one, and kept oldest first for their deadlines. A query is
// one allocation, with its place in the age list in it; the table itself is a flat
// array of pointers to them (open addressing), since every idle client whose lookup is
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
// (to ask, to check the answer, to log a failure), not kept. 56 bytes: a 64-byte malloc
// chunk (a pointer more would take an 80-byte one).
struct DnsblQuery {
    std::string_view address() const { return {reinterpret_cast<const char*>(address_bytes.data()), address_len}; }
    // When it was sent (uv_now() milliseconds), from `now`, a later uv_now(): the low 32
    // bits are kept, as a query lasts far less than 49 days.
    uint64_t sent_at(uint64_t now) const { return now - static_cast<uint32_t>(static_cast<uint32_t>(now) - sent_low); }
    void set_sent(uint64_t now) { sent_low = static_cast<uint32_t>(now); }

    std::array<unsigned char, 16> address_bytes{};  // the client's, network order
    uint8_t address_len = 0;                         // 4 or 16
    // Answered or expired: out of the table, its subscribers told or about to be; it
    // waits for c-ares, which holds it until its callback, to let go of it.
    bool done = false;
    uint32_t sent_low = 0;  // see sent_at()
    DnsblZone* zone = nullptr;
    DnsblSubscription* subscribers = nullptr;  // in the order they asked
    // The age list's links.
    DnsblQuery* older = nullptr;
    DnsblQuery* newer = nullptr;
};
static_assert(sizeof(DnsblQuery) <= 56, "a query in flight outgrew its 64-byte malloc chunk");

class DnsblQueryTable {
public:
    DnsblQueryTable();
    DnsblQueryTable(const DnsblQueryTable&) = delete;
    DnsblQueryTable& operator=(const DnsblQueryTable&) = delete;

    DnsblQuery* find(std::string_view address, const DnsblZone* zone) const;
    // As the newest: queries go in in the order they are sent, and all have the same
    // timeout, so the oldest is the first one due. Not in the table already.
    void insert(DnsblQuery& query);
    void erase(DnsblQuery& query);
    DnsblQuery* oldest() const { return oldest_; }
    bool empty() const { return size_ == 0; }
    std::size_t size() const { return size_; }
    std::size_t capacity() const { return slots_.size(); }

private:
    std::size_t home(std::string_view address, const DnsblZone* zone) const;
    void rehash(std::size_t capacity);

    // Seeded: the addresses are the clients', and an IPv6 client picks among 2^64 of its
    // own, so it must not be able to choose ones that collide.
    uint64_t seed_;
    // A power of two of them, at most 3/4 full (linear probing, backward-shift
    // deletion): 11 to 21 bytes a query, where a bucket chain's link in every query and
    // its buckets took 12 to 16 and made the query an 80-byte chunk.
    std::vector<DnsblQuery*> slots_;
    std::size_t size_ = 0;
    DnsblQuery* oldest_ = nullptr;
    DnsblQuery* newest_ = nullptr;
};

}  // namespace smtpscreen
