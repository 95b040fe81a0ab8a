#pragma once
// limits.per_client_connections' counts: how many connections each client address has
// open. Every held client has one, so it is a flat table of 20-byte entries (open
// addressing, linear probing) instead of a node-based map: an unordered_map's node and
// bucket cost each held client some 56 bytes in malloc chunks, this some 30 at most
// (docs/design.md, "Memory per connection"). Seeded, as the edge tables are
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
    std::size_t size() const { return size_; }          // addresses with a connection
    std::size_t capacity() const { return slots_.size(); }

private:
    struct Slot {
        std::array<unsigned char, 16> bytes{};
        // 0: empty. The top bit tells an IPv4 address from the IPv6 one with the same
        // bytes (its first four, the rest zero).
        uint32_t count_and_family = 0;
        uint32_t count() const { return count_and_family & ~kV4; }
        bool empty() const { return count_and_family == 0; }
    };
    static constexpr uint32_t kV4 = 1u << 31;
    static_assert(sizeof(Slot) == 20);

    struct Key {
        std::array<unsigned char, 16> bytes{};
        uint32_t family = 0;  // kV4 or 0
    };
    static Key key_of(std::string_view address);
    std::size_t home(const Key& key) const;
    // The slot holding key, or the empty slot where it would go.
    std::size_t find(const Key& key) const;
    void rehash(std::size_t capacity);

    uint64_t seed_;
    std::vector<Slot> slots_;  // a power of two of them, at most 3/4 full
    std::size_t size_ = 0;
};

}  // namespace smtpscreen
