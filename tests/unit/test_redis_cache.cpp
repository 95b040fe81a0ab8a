// cache.backend = redis beyond the contract every backend keeps (test_cache_contract):
// the record format other tools read and write, outages (a frozen, a killed and a
// restarted redis-server, a wrong password), the cap on commands in flight, and the
// blocking client of the cache tools and --check. Always a real redis-server.
#include <doctest/doctest.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/redis_blocking.h"
#include "cache/redis_cache.h"
#include "cache/redis_record.h"
#include "core/log.h"
#include "fixtures.h"
#include "redis_server.h"

using namespace smtpscreen;
using namespace smtpscreen::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr int64_t kLater = 4'000'000'000;

TestResults passes(int64_t pregreet, int64_t dnsbl) {
    TestResults r;
    r[Test::Pregreet] = pregreet;
    r[Test::Dnsbl] = dnsbl;
    return r;
}

// A loop with one RedisLoopCache on it, logging to stderr (for StderrCapture).
struct LoopCache {
    Logger log{false, "smtpscreen-test", true};
    UvLoop loop;
    std::shared_ptr<RedisLoopCache> cache;

    explicit LoopCache(const RedisSettings& settings, bool wait_ready = true) {
        cache = std::make_shared<RedisLoopCache>(&loop.loop, settings,
                                                 std::make_shared<RedisOutage>(settings.address, log));
        if (wait_ready) REQUIRE(loop.run_until([&] { return cache->ready(); }));
    }

    // A pass for ip, read back: Redis has carried the store out.
    void store_and_read_back(const std::string& ip) {
        cache->store(ip, passes(kLater, 0));
        REQUIRE(lookup(ip).first);
    }

    // The answer, and how long it took.
    std::pair<std::optional<TestResults>, milliseconds> lookup(const std::string& ip) {
        std::optional<TestResults> got;
        bool called = false;
        const auto start = steady_clock::now();
        cache->lookup(ip, [&](std::optional<TestResults> r) {
            called = true;
            got = r;
        });
        REQUIRE(loop.run_until([&] { return called; }, milliseconds(10000)));
        return {got, std::chrono::duration_cast<milliseconds>(steady_clock::now() - start)};
    }
};

}  // namespace

TEST_CASE("redis record: fields are the tests' log names with pass-until milliseconds") {
    const auto commands = redis_store_commands("smtpscreen:192.0.2.1", passes(1700000000, 1700000600));
    REQUIRE(commands.size() == 5);
    CHECK(commands[0] == RedisCommand{"MULTI"});
    CHECK(commands[1] == RedisCommand{"DEL", "smtpscreen:192.0.2.1"});
    CHECK(commands[2] ==
          RedisCommand{"HSET", "smtpscreen:192.0.2.1", "pregreet", "1700000000000", "dnsbl", "1700000600000"});
    CHECK(commands[3] == RedisCommand{"PEXPIREAT", "smtpscreen:192.0.2.1", "1700000600000"});
    CHECK(commands[4] == RedisCommand{"EXEC"});
    CHECK(redis_store_commands("k", TestResults{}) == std::vector<RedisCommand>{{"DEL", "k"}});

    const auto r = decode_redis_record({{"pregreet", "1700000000999"},
                                        {"bare_newline", "1800000000000"},
                                        {"some_later_test", "1900000000000"},
                                        {"dnsbl", "soon"},
                                        {"pipelining", "-5"}});
    REQUIRE(r);
    CHECK((*r)[Test::Pregreet] == 1700000000);
    CHECK((*r)[Test::BareNewline] == 1800000000);
    CHECK((*r)[Test::Dnsbl] == 0);       // not a number: never passed
    CHECK((*r)[Test::Pipelining] == 0);  // negative: never passed
    CHECK_FALSE(decode_redis_record({}));

    CHECK(redis_prefix_pattern("smtpscreen:") == "smtpscreen:*");
    CHECK(redis_prefix_pattern("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\*");
    CHECK(redis_hello_commands("", 0) == std::vector<RedisCommand>{{"PING"}});
    CHECK(redis_hello_commands("pw", 3) == std::vector<RedisCommand>{{"AUTH", "pw"}, {"SELECT", "3"}, {"PING"}});
}

TEST_CASE("redis cache: a store is a hash that Redis expires with its last pass") {
    RedisServer server;
    LoopCache c(settings_for(server));
    c.cache->store("192.0.2.1", passes(kLater, kLater + 100));
    REQUIRE(c.lookup("192.0.2.1").first);  // the store has been carried out
    CHECK(server.cli({"TYPE", "smtpscreen:192.0.2.1"}) == "hash\n");
    CHECK(server.cli({"HGETALL", "smtpscreen:192.0.2.1"}) ==
          "pregreet\n" + std::to_string(kLater * 1000) + "\ndnsbl\n" + std::to_string((kLater + 100) * 1000) + "\n");
    CHECK(server.cli({"PEXPIRETIME", "smtpscreen:192.0.2.1"}) == std::to_string((kLater + 100) * 1000) + "\n");
    CHECK(c.cache->counters().stores == 1);
}

TEST_CASE("redis cache: a record pre-seeded with redis-cli is read, and a foreign key is a miss") {
    RedisServer server;
    const auto now = static_cast<int64_t>(std::time(nullptr));
    const std::string until = std::to_string((now + 3600) * 1000);
    server.cli({"HSET", "smtpscreen:198.51.100.7", "pregreet", until, "dnsbl", until});
    server.cli({"PEXPIREAT", "smtpscreen:198.51.100.7", until});
    server.cli({"SET", "smtpscreen:198.51.100.8", "not a hash"});
    StderrCapture err;
    LoopCache c(settings_for(server));
    const auto got = c.lookup("198.51.100.7").first;
    REQUIRE(got);
    CHECK(got->passed(Test::Pregreet, now));
    CHECK(got->passed(Test::Dnsbl, now));
    CHECK_FALSE(got->passed(Test::Pipelining, now));
    CHECK_FALSE(c.lookup("198.51.100.8").first);  // WRONGTYPE: that key's problem, no outage
    CHECK(c.cache->ready());
    CHECK(err.count("unreachable") == 0);
}

TEST_CASE("redis cache: a frozen redis-server delays no lookup beyond cache.redis_timeout; one line per outage") {
    RedisServer server;
    StderrCapture err;
    LoopCache c(settings_for(server, Millis(150)));
    c.store_and_read_back("192.0.2.1");

    server.freeze();
    // Several sessions at once: each answered once, as a miss, within the timeout.
    std::vector<int> answered(5, 0);
    std::vector<milliseconds> took(5);
    const auto start = steady_clock::now();
    for (int i = 0; i < 5; ++i) {
        c.cache->lookup("192.0.2.1", [&, i](std::optional<TestResults> r) {
            CHECK_FALSE(r);
            ++answered[i];
            took[i] = std::chrono::duration_cast<milliseconds>(steady_clock::now() - start);
        });
    }
    c.cache->store("192.0.2.2", passes(kLater, 0));
    REQUIRE(c.loop.run_until([&] { return answered[4] == 1; }));
    for (int i = 0; i < 5; ++i) {
        CHECK(answered[i] == 1);
        CHECK(took[i] >= milliseconds(100));
        CHECK(took[i] < milliseconds(150 + 150));  // the timeout, and a margin for a loaded machine
    }
    CHECK(c.cache->counters().timeouts == 1);
    // While it is down: a miss at once, stores dropped, no second line, however long.
    for (int i = 0; i < 20; ++i) {
        auto [r, t] = c.lookup("192.0.2.1");
        CHECK_FALSE(r);
        CHECK(t < milliseconds(50));
        c.cache->store("192.0.2.3", passes(kLater, 0));
    }
    c.loop.run_for(milliseconds(800));  // reconnect attempts time out too
    CHECK(c.cache->counters().stores_dropped >= 20);
    CHECK(c.cache->counters().connects >= 3);
    CHECK(err.count("cache: Redis at " + server.socket() + " unreachable: no reply within 150ms") == 1);
    CHECK(err.count("unreachable") == 1);

    server.thaw();
    REQUIRE(c.loop.run_until([&] { return c.cache->ready(); }, milliseconds(5000)));
    CHECK(err.count("is back") == 1);
    CHECK(c.lookup("192.0.2.1").first);  // the record stored before the outage
    // Late replies from the frozen connections are never read; nothing was answered twice.
    c.loop.run_for(milliseconds(300));
    for (int i = 0; i < 5; ++i) CHECK(answered[i] == 1);
    CHECK(err.count("unreachable") == 1);
}

TEST_CASE("redis cache: a killed redis-server is a miss at once, and the cache reconnects when it is back") {
    RedisServer server;
    StderrCapture err;
    LoopCache c(settings_for(server));
    c.store_and_read_back("192.0.2.1");

    server.kill();
    REQUIRE(c.loop.run_until([&] { return !c.cache->ready(); }));
    for (int i = 0; i < 10; ++i) {
        auto [r, t] = c.lookup("192.0.2.1");
        CHECK_FALSE(r);
        CHECK(t < milliseconds(50));
    }
    c.loop.run_for(milliseconds(600));  // refused reconnects: still one line
    CHECK(err.count("unreachable") == 1);
    CHECK(c.cache->counters().connects >= 3);

    server.start();  // the same socket, an empty database (no persistence)
    REQUIRE(c.loop.run_until([&] { return c.cache->ready(); }, milliseconds(5000)));
    CHECK(err.count("is back") == 1);
    CHECK_FALSE(c.lookup("192.0.2.1").first);
    c.cache->store("192.0.2.1", passes(kLater, 0));
    CHECK(c.lookup("192.0.2.1").first);
}

TEST_CASE("redis cache: an idle connection that Redis closes is opened again without an outage") {
    RedisServer server;
    StderrCapture err;
    LoopCache c(settings_for(server));
    c.loop.run_for(milliseconds(1100));  // ready for more than a second
    server.cli({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
    REQUIRE(c.loop.run_until([&] { return c.cache->counters().connects == 2 && c.cache->ready(); }));
    CHECK(err.count("unreachable") == 0);
    c.cache->store("192.0.2.1", passes(kLater, 0));
    CHECK(c.lookup("192.0.2.1").first);
    // At once again: a second close within a second of the PONG is an outage.
    server.cli({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
    REQUIRE(c.loop.run_until([&] { return err.count("unreachable") == 1; }));
    REQUIRE(c.loop.run_until([&] { return c.cache->ready(); }));
    CHECK(err.count("is back") == 1);
}

TEST_CASE("redis cache: smtpscreen starts while Redis is down and uses it once it is up") {
    RedisServer server;
    server.kill();
    StderrCapture err;
    LoopCache c(settings_for(server), false);
    auto [r, t] = c.lookup("192.0.2.1");
    CHECK_FALSE(r);
    CHECK(t < milliseconds(50));
    CHECK(err.count("unreachable") == 1);
    server.start();
    REQUIRE(c.loop.run_until([&] { return c.cache->ready(); }, milliseconds(5000)));
    CHECK(err.count("is back") == 1);
}

TEST_CASE("redis cache: error replies are misses at once, logged once when they start and once when they end") {
    RedisServer server;
    StderrCapture err;
    LoopCache c(settings_for(server));
    c.store_and_read_back("192.0.2.1");

    server.cli({"ACL", "SETUSER", "default", "-hgetall"});  // every lookup now answers NOPERM
    for (int i = 0; i < 5; ++i) {
        auto [r, t] = c.lookup("192.0.2.1");
        CHECK_FALSE(r);
        CHECK(t < milliseconds(1000));
    }
    CHECK(err.count("refuses lookups: NOPERM") == 1);
    CHECK(c.cache->ready());  // the connection is fine: it stays
    CHECK(c.cache->counters().connects == 1);
    server.cli({"ACL", "SETUSER", "default", "+hgetall"});
    CHECK(c.lookup("192.0.2.1").first);
    CHECK(err.count("answers lookups again") == 1);

    server.cli({"CONFIG", "SET", "maxmemory", "1"});  // every write now answers OOM
    for (int i = 0; i < 3; ++i) {
        c.cache->store("192.0.2.2", passes(kLater, 0));
        CHECK_FALSE(c.lookup("192.0.2.2").first);
    }
    CHECK(err.count("refuses stores") == 1);
    server.cli({"CONFIG", "SET", "maxmemory", "0"});
    c.cache->store("192.0.2.2", passes(kLater, 0));
    CHECK(c.lookup("192.0.2.2").first);
    CHECK(err.count("takes stores again") == 1);
    CHECK(err.count("unreachable") == 0);
}

TEST_CASE("redis cache: two loops, two connections, one line per outage") {
    RedisServer server;
    StderrCapture err;
    const auto settings = settings_for(server, Millis(150));
    Logger log{false, "smtpscreen-test", true};
    auto outage = std::make_shared<RedisOutage>(settings.address, log);
    UvLoop loop_a;
    UvLoop loop_b;
    auto a = std::make_shared<RedisLoopCache>(&loop_a.loop, settings, outage);
    auto b = std::make_shared<RedisLoopCache>(&loop_b.loop, settings, outage);
    auto run_both_until = [&](auto done) {
        const auto end = steady_clock::now() + milliseconds(5000);
        while (!done() && steady_clock::now() < end) {
            uv_run(&loop_a.loop, UV_RUN_NOWAIT);
            uv_run(&loop_b.loop, UV_RUN_NOWAIT);
        }
        return done();
    };
    REQUIRE(run_both_until([&] { return a->ready() && b->ready(); }));
    CHECK(server.cli({"CLIENT", "LIST"}).find("cmd=ping") != std::string::npos);

    server.freeze();
    int answered = 0;
    a->lookup("192.0.2.1", [&](std::optional<TestResults>) { ++answered; });
    b->lookup("192.0.2.1", [&](std::optional<TestResults>) { ++answered; });
    REQUIRE(run_both_until([&] { return answered == 2; }));
    CHECK(a->counters().timeouts == 1);
    CHECK(b->counters().timeouts == 1);
    CHECK(err.count("unreachable") == 1);

    server.thaw();
    REQUIRE(run_both_until([&] { return a->ready() && b->ready(); }));
    CHECK(err.count("is back") == 1);
    a.reset();
    b.reset();
}

TEST_CASE("redis outage: the first loop down says why, the last one back says so") {
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    RedisOutage outage("127.0.0.1:6379", log);
    outage.loop_down("Connection refused");
    outage.loop_down("Connection reset by peer");
    CHECK(err.count("unreachable: Connection refused; sessions carry on as cache misses") == 1);
    CHECK(err.count("unreachable") == 1);
    outage.loop_up();
    CHECK(err.count("is back") == 0);
    outage.loop_up();
    CHECK(err.count("cache: Redis at 127.0.0.1:6379 is back; sessions use the cache again") == 1);
    outage.loop_up();  // more ups than downs: nothing more
    CHECK(err.count("is back") == 1);
}

TEST_CASE("redis cache: AUTH and SELECT on every connection; a wrong password is an outage that says why") {
    RedisServer server({"--requirepass", "s3cret"});
    auto settings = settings_for(server);
    settings.password = "s3cret";
    settings.db = 3;
    {
        LoopCache c(settings);
        c.cache->store("192.0.2.1", passes(kLater, 0));
        REQUIRE(c.lookup("192.0.2.1").first);
        CHECK(server.cli({"-n", "3", "EXISTS", "smtpscreen:192.0.2.1"}) == "1\n");
        CHECK(server.cli({"-n", "0", "EXISTS", "smtpscreen:192.0.2.1"}) == "0\n");
    }
    settings.password = "wrong";
    StderrCapture err;
    LoopCache c(settings, false);
    REQUIRE(c.loop.run_until([&] { return err.count("unreachable") == 1; }));
    CHECK(err.count("refused the connection's set-up") == 1);
    CHECK(err.text().find("s3cret") == std::string::npos);
    CHECK(err.text().find("wrong") == std::string::npos);  // the password is never logged
    CHECK_FALSE(c.lookup("192.0.2.1").first);
    CHECK_FALSE(c.cache->ready());
}

TEST_CASE("redis cache: commands in flight are capped; beyond the cap a lookup is a miss at once") {
    RedisServer server;
    auto settings = settings_for(server, Millis(300));
    settings.max_in_flight = 3;
    LoopCache c(settings);
    server.freeze();
    int answered = 0;
    for (int i = 0; i < 5; ++i) c.cache->lookup("192.0.2.1", [&](std::optional<TestResults>) { ++answered; });
    CHECK(answered == 2);  // the two beyond the cap, at once
    CHECK(c.cache->in_flight() == 3);
    c.cache->store("192.0.2.1", passes(kLater, 0));
    CHECK(c.cache->counters().stores_dropped == 1);
    REQUIRE(c.loop.run_until([&] { return answered == 5; }));
    CHECK(c.cache->counters().unavailable == 2);
    server.thaw();
}

TEST_CASE("redis cache tools: list, show, delete and flush touch only the prefix's records") {
    RedisServer server;
    auto settings = settings_for(server);
    server.cli({"SET", "other:192.0.2.1", "someone else's"});
    server.cli({"SET", "smtpscreen", "no prefix match"});
    // The rate limits' counts share the prefix (cache/redis_rates.h) and are no records.
    server.cli({"SET", "smtpscreen:rate:192.0.2.1", "3"});
    server.cli({"SET", "smtpscreen:rate:192.0.2.0/24", "7"});
    server.cli({"SET", "smtpscreen:fail:192.0.2.1", "2"});  // ban.after's (cache/redis_failures.h)
    // So do greylisting's triplets (cache/redis_greylist.h).
    server.cli({"HSET", "smtpscreen:grey:192.0.2.0/24:a@example.org:b@example.net", "first_seen", "1", "passed", "0",
                "expires", "4102444800000"});
    auto tools = open_redis_cache_blocking(settings, Millis(2000)).verdicts;
    tools->store("192.0.2.2", passes(kLater, 0));
    tools->store("192.0.2.1", passes(kLater, kLater));
    tools->store("2001:db8::1", passes(kLater + 1, 0));
    std::vector<std::string> listed;
    tools->for_each([&](const std::string& ip, const TestResults& r) {
        listed.push_back(ip);
        CHECK(r[Test::Pregreet] >= kLater);
    });
    CHECK(listed == std::vector<std::string>{"192.0.2.1", "192.0.2.2", "2001:db8::1"});
    std::optional<TestResults> shown;
    tools->lookup("192.0.2.1", [&](std::optional<TestResults> r) { shown = r; });
    REQUIRE(shown);
    CHECK((*shown)[Test::Dnsbl] == kLater);
    CHECK(tools->erase("192.0.2.1"));
    CHECK_FALSE(tools->erase("192.0.2.1"));
    CHECK(tools->erase_all() == 2);
    CHECK(server.cli({"GET", "other:192.0.2.1"}) == "someone else's\n");
    CHECK(server.cli({"GET", "smtpscreen"}) == "no prefix match\n");
    CHECK(server.cli({"GET", "smtpscreen:rate:192.0.2.0/24"}) == "7\n");
    CHECK(server.cli({"HGET", "smtpscreen:grey:192.0.2.0/24:a@example.org:b@example.net", "passed"}) == "0\n");
    CHECK(server.cli({"GET", "smtpscreen:fail:192.0.2.1"}) == "2\n");
    CHECK(server.cli({"DBSIZE"}) == "6\n");
}

TEST_CASE("redis probe: --check's question answers nothing when Redis is up and why when it is not") {
    RedisServer server;
    auto settings = settings_for(server);
    CHECK_FALSE(probe_redis(settings, Millis(1000)));
    settings.password = "not-needed";
    const auto refused = probe_redis(settings, Millis(1000));
    REQUIRE(refused);
    CHECK(refused->find("AUTH") != std::string::npos);
    server.kill();
    settings.password.clear();
    const auto down = probe_redis(settings, Millis(1000));
    REQUIRE(down);
    CHECK(down->find(server.socket()) != std::string::npos);
    CHECK_THROWS_AS(open_redis_cache_blocking(settings, Millis(1000)), std::runtime_error);
}
