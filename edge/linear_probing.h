#pragma once
// The deletion step shared by the flat tables of open addressing with linear probing
// (proxy/client_counts.h, dnsbl/query_table.h): backward-shift deletion, so that no
// tombstones pile up under the churn of connections and lookups.
#include <cstddef>
#include <utility>
#include <vector>

namespace smtpscreen {

// Empties slots[hole] and moves back into the hole each entry after it, in its run,
// whose probe would pass the hole. slots.size() is a power of two and T{} an empty slot;
// is_empty(slot) and home(slot) (its first probe) read an entry.
template <typename T, typename IsEmpty, typename Home>
void erase_by_backward_shift(std::vector<T>& slots, std::size_t hole, IsEmpty is_empty, Home home) {
    const std::size_t mask = slots.size() - 1;
    slots[hole] = T{};
    for (std::size_t j = (hole + 1) & mask; !is_empty(slots[j]); j = (j + 1) & mask) {
        const std::size_t h = home(slots[j]);
        // j stays when its home is in the cyclic range (hole, j]: its probe never passes the hole.
        const bool home_between = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
        if (home_between) continue;
        slots[hole] = std::exchange(slots[j], T{});
        hole = j;
    }
}

}  // namespace smtpscreen
