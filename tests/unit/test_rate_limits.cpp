// limits.per_client_rate, limits.per_network_rate, limits.network_prefix and
// limits.rate_table_size: the values, the keys, the bounded table and its sharing
// between loop threads (edge/).
#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "edge/connection_rates.h"
#include "edge/rate_limit.h"
#include "edge/rate_table.h"

using namespace smtpscreen;

namespace {

Endpoint ip(const char* text) { return *Endpoint::parse_ip(text); }

RateLimit rate(uint32_t n, int64_t ms) { return RateLimit{n, Millis(ms)}; }

// The IPv4 address number i: 10.0.0.0 + i.
Endpoint nth_v4(uint32_t i) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl((10u << 24) + i);
    return *Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&in));
}

}  // namespace

TEST_CASE("rate limit values: N/PERIOD and 0, written back as read") {
    std::string why;
    CHECK(parse_rate_limit("0", &why) == RateLimit{});
    CHECK(parse_rate_limit("30/1m", &why) == rate(30, 60000));
    CHECK(parse_rate_limit("3/2s", &why) == rate(3, 2000));
    CHECK(parse_rate_limit("100/250ms", &why) == rate(100, 250));
    CHECK(parse_rate_limit("5/60", &why) == rate(5, 60000));  // a bare number is seconds, as everywhere
    CHECK(parse_rate_limit("1000/1d", &why) == rate(1000, 86400000));
    for (const char* text : {"30/1m", "3/2s", "0", "100/250ms", "7/1h"}) {
        CAPTURE(text);
        CHECK(format_rate_limit(*parse_rate_limit(text, &why)) == text);
    }
    CHECK(format_rate_limit(rate(5, 60000)) == "5/1m");
    for (const char* bad : {"", "30", "/1m", "x/1m", "30/", "30/x", "0/1m", "-1/1m", "30/0", "1.5/1m", "30/2d",
                            "99999999999/1m", " 30/1m", "30/1m/"}) {
        CAPTURE(bad);
        why.clear();
        CHECK_FALSE(parse_rate_limit(bad, &why));
        CHECK(why.find("use N/PERIOD, e.g. 30/1m") != std::string::npos);
    }
}

TEST_CASE("rate keys: a client is its address, a network its prefix, IPv4 and IPv6") {
    CHECK(RateKey::client(ip("192.0.2.7")).to_string() == "192.0.2.7");
    CHECK(RateKey::client(ip("2001:db8::7")).to_string() == "2001:db8::7");
    NetworkPrefix p;  // 24, 64
    CHECK(RateKey::network(ip("192.0.2.7"), p).to_string() == "192.0.2.0/24");
    CHECK(RateKey::network(ip("2001:db8:1:2:aaaa::7"), p).to_string() == "2001:db8:1:2::/64");
    CHECK(RateKey::network(ip("192.0.2.7"), p) == RateKey::network(ip("192.0.2.250"), p));
    CHECK(RateKey::network(ip("192.0.2.7"), p) != RateKey::network(ip("192.0.3.7"), p));
    CHECK(RateKey::network(ip("2001:db8:1:2::1"), p) == RateKey::network(ip("2001:db8:1:2:ffff::9"), p));
    CHECK(RateKey::network(ip("2001:db8:1:2::1"), p) != RateKey::network(ip("2001:db8:1:3::1"), p));
    // An IPv4-mapped IPv6 address is the IPv4 client.
    CHECK(RateKey::client(ip("::ffff:192.0.2.7")) == RateKey::client(ip("192.0.2.7")));
    // Prefixes that do not end on a byte.
    NetworkPrefix odd{20, 50};
    CHECK(RateKey::network(ip("192.0.31.7"), odd).to_string() == "192.0.16.0/20");
    CHECK(RateKey::network(ip("2001:db8:1:ffff::1"), odd).to_string() == "2001:db8:1:c000::/50");
    // A client and a network of full length are counted apart.
    CHECK(RateKey::client(ip("192.0.2.7")) != RateKey::network(ip("192.0.2.7"), NetworkPrefix{32, 128}));
    // 0.0.0.0 and :: are not the same key.
    CHECK(RateKey::client(ip("0.0.0.0")) != RateKey::client(ip("::")));
}

TEST_CASE("rate table: a burst is cut exactly at the limit, refused ones counted too") {
    RateTable t(100);
    const auto key = RateKey::client(ip("192.0.2.7"));
    const auto limit = rate(3, 2000);
    for (uint32_t i = 1; i <= 3; ++i) {
        auto c = t.add(key, limit, 1000 + i);
        CHECK(c.seen == i);
        CHECK_FALSE(c.over);
    }
    for (uint32_t i = 4; i <= 10; ++i) {
        auto c = t.add(key, limit, 1500);
        CHECK(c.seen == i);
        CHECK(c.over);
    }
    // Logged once in the period, however many are refused.
    CHECK(t.first_refusal(key));
    CHECK_FALSE(t.first_refusal(key));
    CHECK_FALSE(t.first_refusal(key));
    // Another client is its own count.
    CHECK_FALSE(t.add(RateKey::client(ip("192.0.2.8")), limit, 1500).over);
    // An unknown key has nothing to log.
    CHECK_FALSE(t.first_refusal(RateKey::client(ip("192.0.2.99"))));
}

TEST_CASE("rate table: the period starts at the first connection and rolls over after it") {
    RateTable t(100);
    const auto key = RateKey::client(ip("2001:db8::1"));
    const auto limit = rate(2, 1000);
    CHECK_FALSE(t.add(key, limit, 10'000).over);  // the period is 10000..10999
    CHECK_FALSE(t.add(key, limit, 10'500).over);
    CHECK(t.add(key, limit, 10'999).over);
    CHECK(t.first_refusal(key));
    auto c = t.add(key, limit, 11'000);  // a new period
    CHECK(c.seen == 1);
    CHECK_FALSE(c.over);
    CHECK_FALSE(t.add(key, limit, 11'100).over);
    CHECK(t.add(key, limit, 11'200).over);
    CHECK(t.first_refusal(key));  // the new period logs again
    // A loop whose cached time is a little behind the period's start: no time passed.
    CHECK(t.add(key, limit, 10'990).over);
    // Long after: a fresh period of its own.
    CHECK(t.add(key, limit, 50'000).seen == 1);
}

TEST_CASE("rate table: a reload that changes the period applies it to the counts kept") {
    RateTable t(10);
    const auto key = RateKey::client(ip("192.0.2.1"));
    t.add(key, rate(1, 60000), 0);
    CHECK(t.add(key, rate(1, 60000), 5000).over);
    CHECK_FALSE(t.add(key, rate(1, 2000), 5000).over);  // 5 s is past a 2 s period
}

TEST_CASE("rate table: full, the least recently counted key is forgotten") {
    RateTable t(3);
    const auto limit = rate(1, 60000);
    auto a = RateKey::client(ip("192.0.2.1")), b = RateKey::client(ip("192.0.2.2")),
         c = RateKey::client(ip("192.0.2.3")), d = RateKey::client(ip("192.0.2.4"));
    t.add(a, limit, 0);
    t.add(b, limit, 1);
    t.add(c, limit, 2);
    CHECK(t.add(a, limit, 3).over);  // a is the most recent now; b the oldest
    t.add(d, limit, 4);
    CHECK(t.size() == 3);
    CHECK_FALSE(t.contains(b));
    CHECK(t.contains(a));
    CHECK(t.contains(c));
    CHECK(t.contains(d));
    // b comes back: a fresh count, and c (now the oldest) goes.
    CHECK_FALSE(t.add(b, limit, 5).over);
    CHECK_FALSE(t.contains(c));
    CHECK(t.size() == 3);
    // A smaller table forgets the oldest at once; a larger one keeps what it has.
    t.set_capacity(1);
    CHECK(t.size() == 1);
    CHECK(t.contains(b));
    t.set_capacity(5);
    CHECK(t.size() == 1);
    CHECK(t.add(b, limit, 6).over);
}

TEST_CASE("rate table: a million distinct addresses stay within the table's size") {
    constexpr size_t kSize = 1000;
    RateTable t(kSize);
    const auto limit = rate(1, 60000);
    size_t largest = 0, not_new = 0;
    for (uint32_t i = 0; i < 1'000'000; ++i) {
        if (t.add(RateKey::client(nth_v4(i)), limit, i / 1000).seen != 1) ++not_new;
        largest = std::max(largest, t.size());
    }
    CHECK(not_new == 0);
    CHECK(largest == kSize);
    CHECK(t.size() == kSize);
    // The last kSize are the ones kept, with their counts.
    size_t kept = 0;
    for (uint32_t i = 1'000'000 - kSize; i < 1'000'000; ++i) kept += t.contains(RateKey::client(nth_v4(i)));
    CHECK(kept == kSize);
    CHECK(t.add(RateKey::client(nth_v4(999'999)), limit, 1000).over);
    CHECK_FALSE(t.contains(RateKey::client(nth_v4(0))));
}

TEST_CASE("connection rates: client and network limits, the client's first") {
    SharedRateTable rates;
    RateRules rules;
    rules.per_client = rate(2, 1000);
    rules.per_network = rate(5, 1000);
    // 192.0.2.1 three times: the third is over its own limit.
    CHECK_FALSE(rates.count_now(ip("192.0.2.1"), rules, 0).refused);
    CHECK_FALSE(rates.count_now(ip("192.0.2.1"), rules, 0).refused);
    auto v = rates.count_now(ip("192.0.2.1"), rules, 0);
    REQUIRE(v.refused);
    CHECK(*v.refused == RateScope::Client);
    CHECK(v.first);
    CHECK(v.limit == rules.per_client);
    CHECK(v.key.to_string() == "192.0.2.1");
    CHECK_FALSE(rates.count_now(ip("192.0.2.1"), rules, 0).first);  // one line a period
    // The /24 has seen 4; two more addresses: the 5th passes, the 6th is over the network's.
    CHECK_FALSE(rates.count_now(ip("192.0.2.2"), rules, 0).refused);
    v = rates.count_now(ip("192.0.2.3"), rules, 0);
    REQUIRE(v.refused);
    CHECK(*v.refused == RateScope::Network);
    CHECK(v.key.to_string() == "192.0.2.0/24");
    CHECK(v.first);
    v = rates.count_now(ip("192.0.2.4"), rules, 0);
    CHECK(*v.refused == RateScope::Network);
    CHECK_FALSE(v.first);
    // Another network is not touched; every key above is in the one table.
    CHECK_FALSE(rates.count_now(ip("192.0.3.1"), rules, 0).refused);
    CHECK(rates.keys_in_memory() == 5 + 2);
    // After the period, all admitted again.
    CHECK_FALSE(rates.count_now(ip("192.0.2.1"), rules, 1000).refused);
    CHECK_FALSE(rates.count_now(ip("192.0.2.4"), rules, 1000).refused);
}

TEST_CASE("connection rates: off, nothing is counted and no table is made") {
    SharedRateTable rates;
    RateRules rules;
    for (int i = 0; i < 100; ++i) CHECK_FALSE(rates.count_now(ip("192.0.2.1"), rules, 0).refused);
    CHECK(rates.keys_in_memory() == 0);
    // The network limit alone counts networks only.
    rules.per_network = rate(1, 1000);
    rates.count_now(ip("192.0.2.1"), rules, 0);
    CHECK(rates.keys_in_memory() == 1);
    // A smaller limits.rate_table_size at a reload shrinks the table.
    rules.table_size = 1;
    rules.per_client = rate(1, 1000);
    rates.count_now(ip("192.0.2.1"), rules, 0);
    CHECK(rates.keys_in_memory() == 1);
}

TEST_CASE("connection rates: the loop threads share one exact count") {
    SharedRateTable rates;
    RateRules rules;
    rules.per_client = rate(1000, 60000);
    constexpr int kThreads = 4, kEach = 2000;
    std::vector<int> admitted(kThreads, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                rates.count(ip("192.0.2.1"), rules, 0, [&](const RateVerdict& v) { admitted[t] += !v.refused; });
            }
        });
    }
    for (auto& th : threads) th.join();
    int total = 0;
    for (int a : admitted) total += a;
    CHECK(total == 1000);
}
