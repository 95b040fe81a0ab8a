// limits.per_client_rate and limits.per_network_rate counted in the Redis of
// cache.backend = redis (cache/redis_rates.h): two loops with their own connections and
// their own in-memory tables, as two instances have, count one client together and
// exactly; a period starts at a key's first connection and Redis ends it; a frozen
// Redis delays no count beyond cache.redis_timeout and the counts go on in memory; an
// error reply does the same, logged once. The failures toward ban.after likewise
// (cache/redis_failures.h). Always a real redis-server.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "cache/redis_cache.h"
#include "cache/redis_failures.h"
#include "cache/redis_rates.h"
#include "core/log.h"
#include "fixtures.h"
#include "redis_server.h"

using namespace smtpscreen;
using namespace smtpscreen::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

Endpoint ip(const char* text) { return *Endpoint::parse_ip(text); }

RateRules rules(RateLimit client, RateLimit network = {}) {
    RateRules r;
    r.per_client = client;
    r.per_network = network;
    return r;
}

// One instance's view: a loop with its Redis connection, the rate counts on it, and
// the in-memory table they fall back to.
struct Instance {
    UvLoop loop;
    std::shared_ptr<RedisLoopCache> cache;
    SharedRateTable memory;
    std::unique_ptr<ConnectionRates> rates;
    FailureCounts failure_memory;
    std::unique_ptr<FailureCounter> failures;

    Instance(const RedisSettings& settings, std::shared_ptr<RedisOutage> outage) {
        cache = std::make_shared<RedisLoopCache>(&loop.loop, settings, std::move(outage));
        rates = cache->loop_rates(memory);
        failures = cache->loop_failures(failure_memory);
        REQUIRE(rates);
        REQUIRE(failures);
        REQUIRE(loop.run_until([&] { return cache->ready(); }));
    }
    ~Instance() {
        rates.reset();
        failures.reset();
        cache.reset();
    }

    // The verdict, and how long it took.
    std::pair<RateVerdict, milliseconds> count(const char* client, const RateRules& r) {
        std::optional<RateVerdict> got;
        const auto start = steady_clock::now();
        rates->count(ip(client), r, uv_now(&loop.loop), [&](const RateVerdict& v) { got = v; });
        REQUIRE(loop.run_until([&] { return got.has_value(); }, milliseconds(10000)));
        return {*got, std::chrono::duration_cast<milliseconds>(steady_clock::now() - start)};
    }

    // One failure toward ban.after: N when it bans, and how long it took.
    std::pair<std::optional<uint32_t>, milliseconds> fail(const char* client, const BanRules& r) {
        std::optional<std::optional<uint32_t>> got;
        const auto start = steady_clock::now();
        failures->fail(ip(client), r, uv_now(&loop.loop), [&](std::optional<uint32_t> n) { got = n; });
        REQUIRE(loop.run_until([&] { return got.has_value(); }, milliseconds(10000)));
        return {*got, std::chrono::duration_cast<milliseconds>(steady_clock::now() - start)};
    }
};

BanRules ban_after(uint32_t n, int64_t period_ms = 60000) {
    BanRules r;
    r.after = RateLimit{n, Millis(period_ms)};
    return r;
}

long long number(const std::string& cli_output) { return std::stoll(cli_output); }

}  // namespace

TEST_CASE("redis rates: the keys are the prefix, rate:, and the client or its network") {
    CHECK(redis_rate_key("smtpscreen:", RateKey::client(ip("192.0.2.7"))) == "smtpscreen:rate:192.0.2.7");
    CHECK(redis_rate_key("p/", RateKey::network(ip("192.0.2.7"), NetworkPrefix{})) == "p/rate:192.0.2.0/24");
    CHECK(redis_rate_key("smtpscreen:", RateKey::network(ip("2001:db8::1:2"), NetworkPrefix{})) ==
          "smtpscreen:rate:2001:db8::/64");
}

TEST_CASE("redis rates: two instances count one client and its network together, exactly") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    Instance b(settings, std::make_shared<RedisOutage>(settings.address, log));
    const RateRules r = rules(RateLimit{3, Millis(60000)}, RateLimit{5, Millis(60000)});

    // 192.0.2.1 five times, A and B in turn: three in, then the fourth is the first
    // refusal of the period (on B), the fifth a refusal that does not log.
    for (int i = 0; i < 3; ++i) CHECK_FALSE((i % 2 == 0 ? a : b).count("192.0.2.1", r).first.refused);
    const RateVerdict fourth = b.count("192.0.2.1", r).first;
    REQUIRE(fourth.refused);
    CHECK(*fourth.refused == RateScope::Client);
    CHECK(fourth.first);
    CHECK(fourth.limit == r.per_client);
    CHECK(fourth.key.to_string() == "192.0.2.1");
    const RateVerdict fifth = a.count("192.0.2.1", r).first;
    REQUIRE(fifth.refused);
    CHECK_FALSE(fifth.first);
    // The network has seen 5: one more address is over its limit.
    const RateVerdict net = a.count("192.0.2.2", r).first;
    REQUIRE(net.refused);
    CHECK(*net.refused == RateScope::Network);
    CHECK(net.key.to_string() == "192.0.2.0/24");
    CHECK(net.first);

    CHECK(server.cli({"GET", "smtpscreen:rate:192.0.2.1"}) == "5\n");
    CHECK(server.cli({"GET", "smtpscreen:rate:192.0.2.2"}) == "1\n");
    CHECK(server.cli({"GET", "smtpscreen:rate:192.0.2.0/24"}) == "6\n");
    const long long ttl = number(server.cli({"PTTL", "smtpscreen:rate:192.0.2.1"}));
    CHECK(ttl > 50000);
    CHECK(ttl <= 60000);
    // Nothing was counted in either instance's memory, and no outage was logged.
    CHECK(a.memory.keys_in_memory() == 0);
    CHECK(b.memory.keys_in_memory() == 0);
    CHECK(err.count("Redis at") == 0);
}

TEST_CASE("redis rates: a period starts at the key's first connection, and Redis ends it") {
    RedisServer server;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    const RateRules r = rules(RateLimit{2, Millis(600)});
    const auto start = steady_clock::now();
    CHECK_FALSE(a.count("198.51.100.1", r).first.refused);
    std::this_thread::sleep_for(milliseconds(300));
    // Later connections do not move the end of the period (PEXPIRE ... NX).
    CHECK_FALSE(a.count("198.51.100.1", r).first.refused);
    CHECK(a.count("198.51.100.1", r).first.refused);
    const long long ttl = number(server.cli({"PTTL", "smtpscreen:rate:198.51.100.1"}));
    CHECK(ttl > 0);
    CHECK(ttl <= 600 - 250);
    // Once Redis has dropped the key, a new period: admitted, counted from 1.
    const auto give_up = steady_clock::now() + milliseconds(3000);
    while (server.cli({"EXISTS", "smtpscreen:rate:198.51.100.1"}) != "0\n" && steady_clock::now() < give_up) {
        std::this_thread::sleep_for(milliseconds(20));
    }
    REQUIRE(server.cli({"EXISTS", "smtpscreen:rate:198.51.100.1"}) == "0\n");
    CHECK(steady_clock::now() - start >= milliseconds(550));
    CHECK_FALSE(a.count("198.51.100.1", r).first.refused);
    CHECK(server.cli({"GET", "smtpscreen:rate:198.51.100.1"}) == "1\n");
    CHECK(number(server.cli({"PTTL", "smtpscreen:rate:198.51.100.1"})) > 100);
}

TEST_CASE("redis rates: a frozen redis-server delays no count beyond cache.redis_timeout; memory counts meanwhile") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server, Millis(150));
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    const RateRules r = rules(RateLimit{2, Millis(60000)});
    CHECK_FALSE(a.count("203.0.113.5", r).first.refused);  // 1 in Redis

    server.freeze();
    const auto [first, waited] = a.count("203.0.113.5", r);
    CHECK_FALSE(first.refused);  // 1 in memory: never refused because Redis is away
    CHECK(waited >= milliseconds(140));
    CHECK(waited < milliseconds(1000));
    CHECK(err.count("unreachable") == 1);
    // While it is down, at once from memory, whose limit holds on its own.
    const auto [second, quick] = a.count("203.0.113.5", r);
    CHECK_FALSE(second.refused);
    CHECK(quick < milliseconds(100));
    const RateVerdict third = a.count("203.0.113.5", r).first;
    REQUIRE(third.refused);
    CHECK(third.first);
    CHECK(a.memory.keys_in_memory() == 1);

    server.thaw();
    REQUIRE(a.loop.run_until([&] { return a.cache->ready(); }, milliseconds(5000)));
    CHECK(err.count("is back") == 1);
    CHECK(err.count("unreachable") == 1);
    // Back in Redis (which may have carried out the count that timed out, once thawed):
    // a new client is counted there, not in memory.
    CHECK_FALSE(a.count("203.0.113.6", r).first.refused);
    CHECK_FALSE(a.count("203.0.113.6", r).first.refused);
    CHECK(a.count("203.0.113.6", r).first.refused);
    CHECK(server.cli({"GET", "smtpscreen:rate:203.0.113.6"}) == "3\n");
    CHECK(a.memory.keys_in_memory() == 1);
}

TEST_CASE("redis rates: an error reply counts in memory at once, logged once until Redis takes counts again") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    server.cli({"SET", "smtpscreen:rate:192.0.2.9", "not a number"});
    const RateRules r = rules(RateLimit{1, Millis(60000)});
    CHECK_FALSE(a.count("192.0.2.9", r).first.refused);
    CHECK(a.count("192.0.2.9", r).first.refused);  // the memory's own limit
    CHECK(a.memory.keys_in_memory() == 1);
    CHECK(err.count("refuses rate counts: ERR value is not an integer") == 1);
    CHECK(a.cache->ready());  // the connection stays
    CHECK_FALSE(a.count("192.0.2.10", r).first.refused);
    CHECK(err.count("cache: Redis at " + settings.address + " takes rate counts again") == 1);
    CHECK(err.count("refuses rate counts") == 1);
}

TEST_CASE("redis failures: the key is the prefix, fail:, and the client") {
    CHECK(redis_failure_key("smtpscreen:", "192.0.2.7") == "smtpscreen:fail:192.0.2.7");
    CHECK(redis_failure_key("mx/", "2001:db8::1") == "mx/fail:2001:db8::1");
}

TEST_CASE("redis failures: two instances count a client's failures together; each N-th bans, on one of them") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    Instance b(settings, std::make_shared<RedisOutage>(settings.address, log));
    const BanRules r = ban_after(3, 60000);

    // A, B, A: the third failure in all bans, though neither instance saw three.
    CHECK_FALSE(a.fail("192.0.2.1", r).first);
    CHECK_FALSE(b.fail("192.0.2.1", r).first);
    CHECK_FALSE(b.fail("192.0.2.2", r).first);  // another client counts apart
    const auto third = a.fail("192.0.2.1", r).first;
    REQUIRE(third);
    CHECK(*third == 3);
    // The next ban takes three more, wherever they come from.
    CHECK_FALSE(b.fail("192.0.2.1", r).first);
    CHECK_FALSE(a.fail("192.0.2.1", r).first);
    CHECK(b.fail("192.0.2.1", r).first == std::optional<uint32_t>(3));

    CHECK(server.cli({"GET", "smtpscreen:fail:192.0.2.1"}) == "6\n");
    CHECK(server.cli({"GET", "smtpscreen:fail:192.0.2.2"}) == "1\n");
    const long long ttl = number(server.cli({"PTTL", "smtpscreen:fail:192.0.2.1"}));
    CHECK(ttl > 50000);
    CHECK(ttl <= 60000);
    CHECK(a.failure_memory.size() == 0);
    CHECK(b.failure_memory.size() == 0);
    CHECK(err.count("Redis at") == 0);
}

TEST_CASE("redis failures: a frozen redis-server or an error reply, and the failures are counted in memory") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server, Millis(150));
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    const BanRules r = ban_after(2, 60000);
    CHECK_FALSE(a.fail("203.0.113.5", r).first);  // 1 in Redis

    server.freeze();
    const auto [first, waited] = a.fail("203.0.113.5", r);
    CHECK_FALSE(first);  // 1 in memory
    CHECK(waited >= milliseconds(140));
    CHECK(waited < milliseconds(1000));
    CHECK(err.count("unreachable") == 1);
    const auto [second, quick] = a.fail("203.0.113.5", r);
    CHECK(second == std::optional<uint32_t>(2));  // memory's own count bans
    CHECK(quick < milliseconds(100));

    server.thaw();
    REQUIRE(a.loop.run_until([&] { return a.cache->ready(); }, milliseconds(5000)));
    server.cli({"SET", "smtpscreen:fail:203.0.113.9", "not a number"});
    CHECK_FALSE(a.fail("203.0.113.9", r).first);
    CHECK(a.failure_memory.size() == 1);
    CHECK(err.count("refuses failure counts: ERR value is not an integer") == 1);
    CHECK(a.cache->ready());  // the connection stays
    CHECK_FALSE(a.fail("203.0.113.10", r).first);
    CHECK(err.count("takes failure counts again") == 1);
    CHECK(server.cli({"GET", "smtpscreen:fail:203.0.113.10"}) == "1\n");
}
