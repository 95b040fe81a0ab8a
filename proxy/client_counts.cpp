#include "proxy/client_counts.h"

#include <algorithm>
#include <cstring>

#include "edge/seeded_hash.h"

namespace smtpscreen {
namespace {

// Small enough that an idle server holds next to nothing; the table grows by doubling
// at 3/4 full and shrinks by half below 1/8 (never under this).
constexpr std::size_t kMinSlots = 64;

}  // namespace

ClientCounts::ClientCounts(uint64_t seed) : seed_(seed ? seed : random_hash_seed()), slots_(kMinSlots) {}

ClientCounts::Key ClientCounts::key_of(std::string_view address) {
    Key key;
    std::memcpy(key.bytes.data(), address.data(), std::min(address.size(), key.bytes.size()));
    key.family = address.size() == 4 ? kV4 : 0;
    return key;
}

std::size_t ClientCounts::home(const Key& key) const {
    uint64_t lo = 0;
    uint64_t hi = 0;
    std::memcpy(&lo, key.bytes.data(), 8);
    std::memcpy(&hi, key.bytes.data() + 8, 8);
    const uint64_t h = hash_mix(hash_mix(hash_mix(seed_ ^ key.family) ^ lo) ^ hi);
    return static_cast<std::size_t>(h) & (slots_.size() - 1);
}

std::size_t ClientCounts::find(const Key& key) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = home(key);; i = (i + 1) & mask) {
        const Slot& s = slots_[i];
        if (s.empty() || ((s.count_and_family & kV4) == key.family && s.bytes == key.bytes)) return i;
    }
}

bool ClientCounts::add(std::string_view address, uint32_t max) {
    const Key key = key_of(address);
    std::size_t i = find(key);
    if (!slots_[i].empty()) {
        if (slots_[i].count() >= max) return false;
        ++slots_[i].count_and_family;
        return true;
    }
    if (max == 0) return false;
    if ((size_ + 1) * 4 > slots_.size() * 3) {
        rehash(slots_.size() * 2);
        i = find(key);
    }
    slots_[i].bytes = key.bytes;
    slots_[i].count_and_family = key.family | 1;
    ++size_;
    return true;
}

bool ClientCounts::remove(std::string_view address) {
    const Key key = key_of(address);
    std::size_t i = find(key);
    if (slots_[i].empty()) return false;
    if (--slots_[i].count_and_family != key.family) return true;
    // The last connection: the slot empties, and the entries after it in its run move
    // back into the hole where their probe would pass it (backward-shift deletion, so
    // that no tombstones pile up under churn).
    const std::size_t mask = slots_.size() - 1;
    slots_[i] = Slot{};
    for (std::size_t j = (i + 1) & mask; !slots_[j].empty(); j = (j + 1) & mask) {
        Key moved{slots_[j].bytes, slots_[j].count_and_family & kV4};
        const std::size_t h = home(moved);
        // j may fill the hole at i when its home is not in the cyclic range (i, j].
        const bool home_between = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (home_between) continue;
        slots_[i] = slots_[j];
        slots_[j] = Slot{};
        i = j;
    }
    --size_;
    if (slots_.size() > kMinSlots && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
    return true;
}

uint32_t ClientCounts::count(std::string_view address) const {
    const Slot& s = slots_[find(key_of(address))];
    return s.empty() ? 0 : s.count();
}

void ClientCounts::rehash(std::size_t capacity) {
    std::vector<Slot> old(capacity);
    old.swap(slots_);
    for (const Slot& s : old) {
        if (s.empty()) continue;
        slots_[find(Key{s.bytes, s.count_and_family & kV4})] = s;
    }
}

}  // namespace smtpscreen
