#include "cache/lmdb_record.h"

#include <algorithm>

#include "cache/ban_record.h"

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

namespace {

constexpr uint8_t kGreylistEntryVersion = 1;
constexpr size_t kGreylistEntrySize = 1 + 8 + 8 + 1;

void put64(std::string& out, size_t at, int64_t value) {
    const auto v = static_cast<uint64_t>(value);
    for (size_t b = 0; b < 8; ++b) out[at + b] = static_cast<char>((v >> (8 * b)) & 0xff);
}

int64_t get64(const unsigned char* p) {
    uint64_t x = 0;
    for (size_t b = 0; b < 8; ++b) x |= static_cast<uint64_t>(p[b]) << (8 * b);
    return static_cast<int64_t>(x);
}

}  // namespace

bool is_lmdb_greylist_key(std::string_view key) { return key.substr(0, kLmdbGreylistPrefix.size()) == kLmdbGreylistPrefix; }

std::string encode_lmdb_greylist_entry(const GreylistEntry& e) {
    std::string out(kGreylistEntrySize, '\0');
    out[0] = static_cast<char>(kGreylistEntryVersion);
    put64(out, 1, e.first_seen_ms);
    put64(out, 9, e.expires_ms);
    out[17] = e.passed ? 1 : 0;
    return out;
}

std::optional<GreylistEntry> decode_lmdb_greylist_entry(std::string_view bytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() != kGreylistEntrySize || p[0] != kGreylistEntryVersion || p[17] > 1) return std::nullopt;
    return GreylistEntry{get64(p + 1), p[17] == 1, get64(p + 9)};
}

bool lmdb_record_lapsed(std::string_view key, std::string_view bytes, int64_t now) {
    if (is_lmdb_greylist_key(key)) {
        const auto e = decode_lmdb_greylist_entry(bytes);
        return !e || e->expires_ms <= now * 1000;
    }
    if (is_ban_key(key)) {
        const auto ban = decode_lmdb_ban(bytes);
        return !ban || ban->keep_until_ms <= now * 1000;
    }
    const auto r = decode_lmdb_record(bytes);
    return !r || all_passes_expired(*r, now);
}

bool lmdb_record_decodes(std::string_view key, std::string_view bytes) {
    if (key.empty()) return false;
    if (is_lmdb_greylist_key(key)) return decode_lmdb_greylist_entry(bytes).has_value();
    if (is_ban_key(key)) return decode_lmdb_ban(bytes).has_value();
    return decode_lmdb_record(bytes).has_value();
}

}  // namespace smtpscreen
