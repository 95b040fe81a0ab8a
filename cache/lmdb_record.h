#pragma once
// The bytes of one record in the `lmdb` cache: a version byte, then one int64
// little-endian pass_until per test, in Test order (and greylisting's triplets, below). Shared by the cache backend and by
// the file check that runs before LMDB maps the file.
#include <optional>
#include <string>
#include <string_view>

#include "edge/greylist.h"
#include "screen/test_results.h"

namespace smtpscreen {

constexpr uint8_t kLmdbRecordVersion = 1;

std::string encode_lmdb_record(const TestResults& r);
// A record with fewer tests (written before a test was added) reads with the missing
// ones as "never passed", so adding a test does not void the cache. nullopt when the
// bytes are not a record of this version.
std::optional<TestResults> decode_lmdb_record(std::string_view bytes);

// True when no pass in the record is still valid at `now`.
bool all_passes_expired(const TestResults& r, int64_t now);

// Greylisting's triplets (edge/greylist.h) share the file: each is a record whose key
// is "grey:" and the triplet ("grey:192.0.2.0/24:a@example.org:b@example.net"; no
// client address starts with a 'g'), holding a version byte, the first attempt and the
// time the entry lapses (int64 little-endian Unix milliseconds each), and a byte that
// is 1 once a retry passed. LMDB keys are at most 511 bytes: a longer triplet stays in
// memory only.
inline constexpr std::string_view kLmdbGreylistPrefix = "grey:";
inline constexpr size_t kLmdbMaxKey = 511;
bool is_lmdb_greylist_key(std::string_view key);
std::string encode_lmdb_greylist_entry(const GreylistEntry& e);
std::optional<GreylistEntry> decode_lmdb_greylist_entry(std::string_view bytes);
// Bans (cache/ban_record.h) share it too, under "ban:<address>".
// A record of any kind that no lookup needs any more at `now` (Unix seconds), or that
// does not decode: cleanups drop lapsed triplets and forgotten bans as they drop passes.
bool lmdb_record_lapsed(std::string_view key, std::string_view bytes, int64_t now);
// Whether the bytes under `key` are a record of the kind the key says.
bool lmdb_record_decodes(std::string_view key, std::string_view bytes);

}  // namespace smtpscreen
