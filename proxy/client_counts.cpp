#include "proxy/client_counts.h"

#include <algorithm>
#include <cstring>

#include "edge/linear_probing.h"
#include "edge/seeded_hash.h"

namespace smtpscreen {
namespace {

// Small enough that an idle server holds next to nothing; a table grows by doubling
// at 3/4 full and shrinks by half below 1/8 (never under this).
constexpr std::size_t kMinSlots = 64;

}  // namespace

template <std::size_t N>
ClientCounts::Table<N>::Table(uint64_t seed) : seed_(seed), slots_(kMinSlots) {
    static_assert(sizeof(Slot) == N + 4, "an entry is its address and its count, nothing more");
}

template <std::size_t N>
typename ClientCounts::Table<N>::Key ClientCounts::Table<N>::key_of(std::string_view address) {
    Key key{};
    std::memcpy(key.data(), address.data(), std::min(address.size(), N));
    return key;
}

template <std::size_t N>
std::size_t ClientCounts::Table<N>::home(const Key& key) const {
    uint64_t h = hash_mix(seed_ ^ N);
    for (std::size_t i = 0; i < N; i += 8) {
        uint64_t word = 0;
        std::memcpy(&word, key.data() + i, std::min<std::size_t>(8, N - i));
        h = hash_mix(h ^ word);
    }
    return static_cast<std::size_t>(h) & (slots_.size() - 1);
}

template <std::size_t N>
std::size_t ClientCounts::Table<N>::find(const Key& key) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = home(key);; i = (i + 1) & mask) {
        const Slot& s = slots_[i];
        if (s.count == 0 || s.bytes == key) return i;
    }
}

template <std::size_t N>
bool ClientCounts::Table<N>::add(std::string_view address, uint32_t max) {
    const Key key = key_of(address);
    std::size_t i = find(key);
    if (slots_[i].count != 0) {
        if (slots_[i].count >= max) return false;
        ++slots_[i].count;
        return true;
    }
    if (max == 0) return false;
    if ((size_ + 1) * 4 > slots_.size() * 3) {
        rehash(slots_.size() * 2);
        i = find(key);
    }
    slots_[i].bytes = key;
    slots_[i].count = 1;
    ++size_;
    return true;
}

template <std::size_t N>
bool ClientCounts::Table<N>::remove(std::string_view address) {
    std::size_t i = find(key_of(address));
    if (slots_[i].count == 0) return false;
    if (--slots_[i].count != 0) return true;
    // The last connection: the slot empties.
    erase_by_backward_shift(
        slots_, i, [](const Slot& s) { return s.count == 0; }, [this](const Slot& s) { return home(s.bytes); });
    --size_;
    if (slots_.size() > kMinSlots && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
    return true;
}

template <std::size_t N>
uint32_t ClientCounts::Table<N>::count(std::string_view address) const {
    return slots_[find(key_of(address))].count;
}

template <std::size_t N>
void ClientCounts::Table<N>::rehash(std::size_t capacity) {
    std::vector<Slot> old(capacity);
    old.swap(slots_);
    for (const Slot& s : old) {
        if (s.count != 0) slots_[find(s.bytes)] = s;
    }
}

// Each table is seeded apart (N is mixed in), from the one seed.
ClientCounts::ClientCounts(uint64_t seed)
    : v4_(seed ? seed : random_hash_seed()), v6_(seed ? seed : random_hash_seed()) {}

bool ClientCounts::add(std::string_view address, uint32_t max) {
    return address.size() == 4 ? v4_.add(address, max) : v6_.add(address, max);
}

bool ClientCounts::remove(std::string_view address) {
    return address.size() == 4 ? v4_.remove(address) : v6_.remove(address);
}

uint32_t ClientCounts::count(std::string_view address) const {
    return address.size() == 4 ? v4_.count(address) : v6_.count(address);
}

}  // namespace smtpscreen
