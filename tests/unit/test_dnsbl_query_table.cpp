// The DNSBL queries in flight (dnsbl/query_table.h): found by (address, zone) through
// random inserts and erases against a std::map (backward-shift deletion keeps every
// query findable), the age list oldest first, growth and shrinking, and the send time
// kept in 32 bits across uv_now()'s 2^32 ms.
#include <doctest/doctest.h>

#include <cstring>
#include <list>
#include <map>
#include <random>
#include <string>
#include <utility>

#include "dnsbl/query_table.h"

using namespace smtpscreen;

namespace {

// Zones are only compared and hashed by the table: distinct addresses stand in for them.
char zone_storage[3];
DnsblZone* zone(int i) { return reinterpret_cast<DnsblZone*>(&zone_storage[i]); }

void set_address(DnsblQuery& q, uint32_t n, bool v6) {
    q.address_len = v6 ? 16 : 4;
    std::memcpy(q.address_bytes.data(), &n, 4);
}

std::vector<DnsblQuery*> by_age(const DnsblQueryTable& table) {
    std::vector<DnsblQuery*> out;
    for (DnsblQuery* q = table.oldest(); q; q = q->newer) out.push_back(q);
    return out;
}

}  // namespace

TEST_CASE("dnsbl query table: a query is 56 bytes, in a 64-byte malloc chunk") {
    // docs/design.md, "Memory per connection": every held client with its lookup in
    // flight holds one.
    CHECK(sizeof(DnsblQuery) == 56);
}

TEST_CASE("dnsbl query table: random churn agrees with a map; the age list keeps the order of insertion") {
    for (uint32_t seed : {1u, 2u, 3u}) {
        DnsblQueryTable table;
        std::list<DnsblQuery> storage;  // stable addresses, as the heap gives the resolver
        std::map<std::pair<std::string, int>, DnsblQuery*> model;
        std::vector<DnsblQuery*> order;  // the model's age list
        std::mt19937 rng(seed);
        std::size_t biggest = 0;
        for (int i = 0; i < 60000; ++i) {
            const uint32_t n = rng() % 3000;
            const int z = static_cast<int>(rng() % 3);
            DnsblQuery probe;
            set_address(probe, n, n % 4 == 0);
            const auto key = std::make_pair(std::string(probe.address()), z);
            const bool adding = (rng() % 100) < (i < 30000 ? 70u : 30u);
            auto it = model.find(key);
            REQUIRE(table.find(probe.address(), zone(z)) == (it == model.end() ? nullptr : it->second));
            if (adding && it == model.end()) {
                DnsblQuery& q = storage.emplace_back();
                set_address(q, n, n % 4 == 0);
                q.zone = zone(z);
                table.insert(q);
                model[key] = &q;
                order.push_back(&q);
            } else if (!adding && it != model.end()) {
                table.erase(*it->second);
                std::erase(order, it->second);
                model.erase(it);
            }
            biggest = std::max(biggest, table.capacity());
            if (i % 5000 == 0) {
                REQUIRE(table.size() == model.size());
                for (const auto& [k, q] : model) REQUIRE(table.find(q->address(), q->zone) == q);
                CHECK(by_age(table) == order);
                CHECK(table.size() * 4 <= table.capacity() * 3);
            }
        }
        for (auto& [k, q] : model) table.erase(*q);
        CHECK(table.empty());
        CHECK(table.oldest() == nullptr);
        CHECK(biggest >= 2048);
        CHECK(table.capacity() == 64);
    }
}

TEST_CASE("dnsbl query table: the same address under two zones, and IPv4 apart from IPv6") {
    DnsblQueryTable table;
    DnsblQuery a, b, c;
    set_address(a, 0x0100007f, false);
    set_address(b, 0x0100007f, false);
    set_address(c, 0x0100007f, true);
    a.zone = zone(0);
    b.zone = zone(1);
    c.zone = zone(0);
    table.insert(a);
    table.insert(b);
    table.insert(c);
    CHECK(table.find(a.address(), zone(0)) == &a);
    CHECK(table.find(b.address(), zone(1)) == &b);
    CHECK(table.find(c.address(), zone(0)) == &c);
    table.erase(b);
    CHECK(table.find(b.address(), zone(1)) == nullptr);
    CHECK(by_age(table) == std::vector<DnsblQuery*>{&a, &c});
    table.erase(b);  // not in the table: nothing changes
    CHECK(table.size() == 2);
    table.erase(a);
    table.erase(c);
}

TEST_CASE("dnsbl query table: the send time survives uv_now() passing 2^32 ms") {
    DnsblQuery q;
    const uint64_t sent = (uint64_t{1} << 32) - 1500;
    q.set_sent(sent);
    CHECK(q.sent_at(sent) == sent);
    CHECK(q.sent_at(sent + 1000) == sent);
    CHECK(q.sent_at(sent + 30000) == sent);  // past 2^32
    CHECK(q.sent_at((uint64_t{5} << 32) + 7) == (uint64_t{5} << 32) + 7 - (7 + 1500));
}
