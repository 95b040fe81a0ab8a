#pragma once
// Shared by the fuzz targets: a check that holds in every build type (assert() is gone
// under NDEBUG, and a fuzzer must never stop checking), and a small deterministic
// generator so that a target can derive split points from its input: the same input
// always replays the same way, and a mutation of the input moves the splits.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace smtpscreen::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const char* condition, const std::string& detail) {
    std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", file, line, condition);
    if (!detail.empty()) std::fprintf(stderr, "  %s\n", detail.c_str());
    // abort() is what libFuzzer (and the replay runner's test) report as a crash, with
    // the input saved as crash-<sha1>.
    std::abort();
}

// Printable form of bytes for a failure message: C escapes for anything not ASCII text.
inline std::string escaped(std::string_view bytes, size_t max = 200) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < bytes.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(bytes[i]);
        if (c == '\r')
            out += "\\r";
        else if (c == '\n')
            out += "\\n";
        else if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c >= 0x20 && c < 0x7f)
            out += static_cast<char>(c);
        else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0x0f];
        }
    }
    if (bytes.size() > max) out += "...";
    return "\"" + out + "\"";
}

// splitmix64, seeded from an FNV-1a hash of the input.
class InputRandom {
public:
    explicit InputRandom(std::string_view input) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (unsigned char c : input) h = (h ^ c) * 0x100000001b3ull;
        state_ = h;
    }
    uint64_t next() {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // 0 .. n-1 (n > 0)
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }

private:
    uint64_t state_;
};

}  // namespace smtpscreen::fuzz

#define FUZZ_CHECK(condition, detail)                                                       \
    do {                                                                                    \
        if (!(condition)) ::smtpscreen::fuzz::fail(__FILE__, __LINE__, #condition, detail); \
    } while (0)
