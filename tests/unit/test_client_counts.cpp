// limits.per_client_connections' flat table (proxy/client_counts.h): counts against a
// std::map under random adds and removes (backward-shift deletion keeps every entry
// findable), the bound, IPv4 apart from the IPv6 address with the same first bytes,
// growth and shrinking. IPv4 and IPv6 addresses are kept in a table each.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <string>

#include "proxy/client_counts.h"

using namespace smtpscreen;

namespace {

std::string v4(uint32_t n) { return std::string(reinterpret_cast<const char*>(&n), 4); }

std::string v6(uint32_t n) {
    std::string s(16, '\0');
    s.replace(0, 4, reinterpret_cast<const char*>(&n), 4);
    return s;
}

}  // namespace

TEST_CASE("client counts: add up to the bound, remove back to none") {
    ClientCounts counts(42);
    CHECK(counts.add(v4(1), 2));
    CHECK(counts.add(v4(1), 2));
    CHECK_FALSE(counts.add(v4(1), 2));
    CHECK(counts.count(v4(1)) == 2);
    CHECK(counts.size() == 1);
    CHECK_FALSE(counts.add(v4(2), 0));
    CHECK(counts.count(v4(2)) == 0);
    CHECK(counts.remove(v4(1)));
    CHECK(counts.remove(v4(1)));
    CHECK_FALSE(counts.remove(v4(1)));
    CHECK(counts.size() == 0);
}

TEST_CASE("client counts: an IPv4 address is not the IPv6 one with the same bytes") {
    ClientCounts counts(7);
    CHECK(counts.add(v4(0x0100007f), 1));
    CHECK(counts.add(v6(0x0100007f), 1));
    CHECK(counts.count(v4(0x0100007f)) == 1);
    CHECK(counts.count(v6(0x0100007f)) == 1);
    CHECK(counts.remove(v6(0x0100007f)));
    CHECK(counts.count(v4(0x0100007f)) == 1);
    CHECK(counts.count(v6(0x0100007f)) == 0);
}

TEST_CASE("client counts: random churn agrees with a map, grows and shrinks") {
    for (uint64_t seed : {1ull, 2ull, 3ull}) {
        ClientCounts counts(seed);
        std::map<std::string, uint32_t> model;
        std::mt19937 rng(static_cast<uint32_t>(seed));
        size_t biggest = 0;
        for (int i = 0; i < 200000; ++i) {
            // Few enough addresses that runs form and collide; adds win early on, so
            // the table grows, then removes win, so it shrinks.
            const uint32_t n = rng() % 5000;
            const std::string addr = n % 3 ? v4(n) : v6(n);
            const bool adding = (rng() % 100) < (i < 100000 ? 70u : 30u);
            if (adding) {
                const bool fits = model[addr] < 3;
                CHECK(counts.add(addr, 3) == fits);
                if (fits) ++model[addr];
                if (model[addr] == 0) model.erase(addr);
            } else {
                auto it = model.find(addr);
                CHECK(counts.remove(addr) == (it != model.end()));
                if (it != model.end() && --it->second == 0) model.erase(it);
            }
            biggest = std::max(biggest, counts.capacity());
            if (i % 10000 == 0) {
                REQUIRE(counts.size() == model.size());
                for (const auto& [a, c] : model) REQUIRE(counts.count(a) == c);
                CHECK(counts.size() * 4 <= counts.capacity() * 3);
            }
        }
        while (!model.empty()) {
            auto it = model.begin();
            REQUIRE(counts.remove(it->first));
            if (--it->second == 0) model.erase(it);
        }
        CHECK(counts.size() == 0);
        CHECK(biggest >= 4096);
        CHECK(counts.capacity() == 2 * 64);  // each family's table back at its least
    }
}

TEST_CASE("client counts: IPv4 addresses fill a table of their own") {
    // An IPv4 entry is 8 bytes where a 16-byte address takes 20 (docs/design.md,
    // "Memory per connection"): a thousand IPv4 clients grow only their table.
    ClientCounts counts(9);
    for (uint32_t n = 1; n <= 1000; ++n) REQUIRE(counts.add(v4(n), 1));
    CHECK(counts.capacity() == 2048 + 64);
    CHECK(counts.add(v6(1), 1));
    CHECK(counts.size() == 1001);
    CHECK(counts.capacity() == 2048 + 64);
    for (uint32_t n = 1; n <= 1000; ++n) REQUIRE(counts.remove(v4(n)));
    CHECK(counts.count(v6(1)) == 1);
    CHECK(counts.capacity() == 64 + 64);
}
