#pragma once
// limits.per_client_connections' counts: how many connections each client address has
// open. Every held client has one, so they are flat tables (open addressing, linear
// probing) instead of a node-based map: an unordered_map's node and bucket cost each
// held client some 56 bytes in malloc chunks. One table per family: an IPv4 entry is 8
// bytes (its address and its count), where one table for both took 20 for every
// address (docs/design.md, "Memory per connection"). Seeded, as the edge tables are
// (edge/seeded_hash.h): an IPv6 client picks among 2^64 addresses of its own, and must
// not be able to choose ones that collide.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace smtpscreen {

class ClientCounts {
public:
    // seed 0: one from the system's random source.
    explicit ClientCounts(uint64_t seed = 0);

    // address: the raw bytes, 4 (IPv4) or 16 (IPv6). One more connection from it, unless
    // it has `max` already: false then, and nothing changes.
    bool add(std::string_view address, uint32_t max);
    // One connection fewer; false when the address had none.
    bool remove(std::string_view address);
    uint32_t count(std::string_view address) const;
    std::size_t size() const { return v4_.size() + v6_.size(); }  // addresses with a connection
    std::size_t capacity() const { return v4_.capacity() + v6_.capacity(); }  // slots, both tables

private:
    // The addresses of one length N, each with its count.
    template <std::size_t N>
    class Table {
    public:
        explicit Table(uint64_t seed);
        bool add(std::string_view address, uint32_t max);
        bool remove(std::string_view address);
        uint32_t count(std::string_view address) const;
        std::size_t size() const { return size_; }
        std::size_t capacity() const { return slots_.size(); }

    private:
        struct Slot {
            std::array<unsigned char, N> bytes{};
            uint32_t count = 0;  // 0: empty
        };
        using Key = std::array<unsigned char, N>;
        static Key key_of(std::string_view address);
        std::size_t home(const Key& key) const;
        // The slot holding key, or the empty slot where it would go.
        std::size_t find(const Key& key) const;
        void rehash(std::size_t capacity);

        uint64_t seed_;
        std::vector<Slot> slots_;  // a power of two of them, at most 3/4 full
        std::size_t size_ = 0;
    };

    Table<4> v4_;
    Table<16> v6_;
};

}  // namespace smtpscreen
