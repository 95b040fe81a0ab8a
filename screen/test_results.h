#pragma once
// Per-test pass expiry, one small table indexed by test (as postscreen_tests.c keeps
// it), so the cache, the logs and the verdict all read the same data.
#include <array>
#include <cstdint>
#include <string_view>

namespace smtpscreen {

// Greylist is the client's pass of greylisting (edge/greylist.h): no test it fails,
// but a pass the cache keeps like the others. New tests go at the end: the lmdb cache
// stores passes by index.
enum class Test : uint8_t { Pregreet = 0, Dnsbl, Pipelining, NonSmtp, BareNewline, Greylist, Count };
constexpr size_t kTestCount = static_cast<size_t>(Test::Count);

std::string_view test_name(Test t);  // "pregreet", "dnsbl", "pipelining", "non_smtp", "bare_newline", "greylist"

// When each test's pass expires, in Unix seconds; 0 means "never passed".
struct TestResults {
    std::array<int64_t, kTestCount> pass_until{};

    int64_t& operator[](Test t) { return pass_until[static_cast<size_t>(t)]; }
    int64_t operator[](Test t) const { return pass_until[static_cast<size_t>(t)]; }
    bool passed(Test t, int64_t now) const { return (*this)[t] > now; }
};

}  // namespace smtpscreen
