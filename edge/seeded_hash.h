#pragma once
// The pieces of the edge tables' seeded hashes (rate_table, greylist): their keys are
// chosen by strangers (an IPv6 address within a /64, an envelope address), so the hash
// is seeded per table with random bits, and a client cannot pick keys that all land in
// one bucket (hash flooding, CVE-2011-4815 and its kin).
#include <cstdint>
#include <random>

namespace smtpscreen {

// splitmix64's finaliser: every input bit reaches every output bit.
inline uint64_t hash_mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// A table's seed, from the system's random source.
inline uint64_t random_hash_seed() {
    std::random_device device;
    return (uint64_t{device()} << 32) ^ device();
}

}  // namespace smtpscreen
