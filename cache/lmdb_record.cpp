#include "cache/lmdb_record.h"

#include <algorithm>

namespace smtpscreen {

std::string encode_lmdb_record(const TestResults& r) {
    std::string out(1 + 8 * kTestCount, '\0');
    out[0] = static_cast<char>(kLmdbRecordVersion);
    for (size_t t = 0; t < kTestCount; ++t) {
        const auto v = static_cast<uint64_t>(r.pass_until[t]);
        for (size_t b = 0; b < 8; ++b) out[1 + 8 * t + b] = static_cast<char>((v >> (8 * b)) & 0xff);
    }
    return out;
}

std::optional<TestResults> decode_lmdb_record(std::string_view bytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() < 1 + 8 || (bytes.size() - 1) % 8 != 0 || p[0] != kLmdbRecordVersion) return std::nullopt;
    TestResults r;
    const size_t stored = std::min((bytes.size() - 1) / 8, kTestCount);
    for (size_t t = 0; t < stored; ++t) {
        uint64_t x = 0;
        for (size_t b = 0; b < 8; ++b) x |= static_cast<uint64_t>(p[1 + 8 * t + b]) << (8 * b);
        r.pass_until[t] = static_cast<int64_t>(x);
    }
    return r;
}

bool all_passes_expired(const TestResults& r, int64_t now) {
    return std::all_of(r.pass_until.begin(), r.pass_until.end(), [now](int64_t t) { return t <= now; });
}

}  // namespace smtpscreen
