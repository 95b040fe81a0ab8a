// The one contract every cache backend keeps, run against each of them: sessions do
// not know which backend they use, so lmdb, memory and Redis must answer alike. Redis
// runs as a real redis-server (tests/unit/redis_server.h) and answers from the loop;
// the embedded backends answer inline.
#include <doctest/doctest.h>

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/redis_cache.h"
#include "cache/verdict_cache.h"
#include "core/log.h"
#include "fixtures.h"
#include "redis_server.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {

constexpr int64_t kLater = 4'000'000'000;  // 2096: a pass still valid

struct LmdbBackend {
    TempDir dir{"smtpscreen-cache"};
    Logger log{false, "smtpscreen-test", false};
    UvLoop loop;
    std::shared_ptr<VerdictCache> cache = open_lmdb_cache(dir.path("c"), log);
};

struct MemoryBackend {
    UvLoop loop;
    std::shared_ptr<VerdictCache> cache = open_memory_cache();
};

struct RedisBackend {
    RedisServer server;
    Logger log{false, "smtpscreen-test", false};
    UvLoop loop;  // declared before the cache, so it is closed after it
    std::shared_ptr<RedisLoopCache> cache;

    RedisBackend() {
        RedisSettings settings;
        settings.address = server.socket();
        settings.timeout = Millis(2000);  // a slow machine under ASan is no outage here
        cache = std::make_shared<RedisLoopCache>(&loop.loop, settings,
                                                 std::make_shared<RedisOutage>(settings.address, log));
        REQUIRE(loop.run_until([&] { return cache->ready(); }));
    }
};

template <typename Backend>
std::optional<TestResults> lookup(Backend& b, const std::string& ip) {
    std::optional<TestResults> got;
    bool called = false;
    b.cache->lookup(ip, [&](std::optional<TestResults> r) {
        REQUIRE_FALSE(called);  // once
        called = true;
        got = r;
    });
    REQUIRE(b.loop.run_until([&] { return called; }));
    return got;
}

TestResults every_test_passed(int64_t base) {
    TestResults r;
    for (size_t t = 0; t < kTestCount; ++t) r.pass_until[t] = base + static_cast<int64_t>(t);
    return r;
}

TestResults pregreet_only(int64_t until) {
    TestResults r;
    r[Test::Pregreet] = until;
    return r;
}

}  // namespace

#define CACHE_BACKENDS LmdbBackend, MemoryBackend, RedisBackend

TEST_CASE_TEMPLATE("cache contract: an unknown client is a miss; a stored record reads back whole", B,
                   CACHE_BACKENDS) {
    B b;
    CHECK_FALSE(lookup(b, "192.0.2.1"));
    b.cache->store("192.0.2.1", every_test_passed(kLater));
    const auto got = lookup(b, "192.0.2.1");
    REQUIRE(got);
    CHECK(got->pass_until == every_test_passed(kLater).pass_until);
    CHECK_FALSE(lookup(b, "192.0.2.2"));
}

TEST_CASE_TEMPLATE("cache contract: a store replaces the whole record", B, CACHE_BACKENDS) {
    B b;
    b.cache->store("192.0.2.1", every_test_passed(kLater));
    b.cache->store("192.0.2.1", pregreet_only(kLater + 50));
    const auto got = lookup(b, "192.0.2.1");
    REQUIRE(got);
    CHECK(got->pass_until == pregreet_only(kLater + 50).pass_until);  // the other passes are gone
}

TEST_CASE_TEMPLATE("cache contract: IPv4 and IPv6 clients are records of their own", B, CACHE_BACKENDS) {
    B b;
    b.cache->store("2001:db8::1", pregreet_only(kLater));
    b.cache->store("192.0.2.1", pregreet_only(kLater + 1));
    CHECK(lookup(b, "2001:db8::1")->pass_until == pregreet_only(kLater).pass_until);
    CHECK(lookup(b, "192.0.2.1")->pass_until == pregreet_only(kLater + 1).pass_until);
    CHECK_FALSE(lookup(b, "2001:db8::2"));
}

TEST_CASE_TEMPLATE("cache contract: a lookup's callback may store at once", B, CACHE_BACKENDS) {
    B b;
    bool called = false;
    b.cache->lookup("192.0.2.9", [&](std::optional<TestResults> r) {
        CHECK_FALSE(r);
        called = true;
        b.cache->store("192.0.2.9", pregreet_only(kLater));
    });
    REQUIRE(b.loop.run_until([&] { return called; }));
    CHECK(lookup(b, "192.0.2.9")->pass_until == pregreet_only(kLater).pass_until);
}

TEST_CASE_TEMPLATE("cache contract: lookups and stores in a row each get their own answer, in order", B,
                   CACHE_BACKENDS) {
    B b;
    constexpr int kClients = 300;
    auto ip = [](int i) { return "10.9." + std::to_string(i / 250) + "." + std::to_string(i % 250); };
    for (int i = 0; i < kClients; i += 2) b.cache->store(ip(i), pregreet_only(kLater + i));
    // All asked before any answer is read (Redis gets them pipelined on one connection).
    std::vector<std::optional<TestResults>> got(kClients);
    std::vector<int> answers(kClients, 0);
    std::vector<int> order;
    for (int i = 0; i < kClients; ++i) {
        b.cache->lookup(ip(i), [&, i](std::optional<TestResults> r) {
            ++answers[i];
            got[i] = r;
            order.push_back(i);
        });
    }
    REQUIRE(b.loop.run_until([&] { return order.size() == kClients; }));
    for (int i = 0; i < kClients; ++i) {
        CHECK(answers[i] == 1);
        if (i % 2 == 0) {
            REQUIRE(got[i]);
            CHECK((*got[i])[Test::Pregreet] == kLater + i);
        } else {
            CHECK_FALSE(got[i]);
        }
    }
    for (int i = 0; i < kClients; ++i) CHECK(order[i] == i);
}

TEST_CASE_TEMPLATE("cache contract: a record whose passes have all expired never reads as a pass", B,
                   CACHE_BACKENDS) {
    B b;
    const auto now = static_cast<int64_t>(std::time(nullptr));
    TestResults old;
    old[Test::Pregreet] = now - 10;
    old[Test::Dnsbl] = now - 5;
    b.cache->store("192.0.2.3", old);
    // lmdb keeps it until a cleanup, memory and Redis drop it: either way, no pass.
    const auto got = lookup(b, "192.0.2.3");
    for (size_t t = 0; got && t < kTestCount; ++t) CHECK_FALSE(got->passed(static_cast<Test>(t), now));
}
