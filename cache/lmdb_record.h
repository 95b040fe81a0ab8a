#pragma once
// The bytes of one record in the `lmdb` cache: a version byte, then one int64
// little-endian pass_until per test, in Test order. Shared by the cache backend and by
// the file check that runs before LMDB maps the file.
#include <optional>
#include <string>
#include <string_view>

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

}  // namespace smtpscreen
