// Greylisting's triplets in the Redis of cache.backend = redis (cache/redis_greylist.h):
// two loops with their own connections, as two instances have, greylist one triplet
// together (first tried on one, retried on the other); the record is the documented
// hash with its Redis expiry, and one another tool wrote is read; a frozen Redis
// delays no RCPT beyond cache.redis_timeout and lets it through, logged once per
// outage; an error reply does the same at once. Always a real redis-server.
#include <doctest/doctest.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <optional>
#include <string>

#include "cache/redis_cache.h"
#include "cache/redis_greylist.h"
#include "core/log.h"
#include "fixtures.h"
#include "redis_server.h"

using namespace smtpscreen;
using namespace smtpscreen::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr const char* kTriplet = "192.0.2.0/24:list@example.org:user@example.net";
constexpr const char* kKey = "smtpscreen:grey:192.0.2.0/24:list@example.org:user@example.net";

// Redis expires keys by its own clock: the attempts happen at the real time.
int64_t unix_ms() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

GreylistRules rules() {
    GreylistRules r;
    r.delay = Millis(5LL * 60000);
    r.retry_window = Millis(2LL * 86400000);
    r.ttl = Millis(35LL * 86400000);
    return r;
}

// One instance's view: a loop with its Redis connection and the greylist on it.
struct Instance {
    UvLoop loop;
    std::shared_ptr<RedisLoopCache> cache;
    std::unique_ptr<GreylistStore> greylist;

    Instance(const RedisSettings& settings, std::shared_ptr<RedisOutage> outage) {
        cache = std::make_shared<RedisLoopCache>(&loop.loop, settings, std::move(outage));
        greylist = cache->loop_greylist();
        REQUIRE(greylist);
        REQUIRE(loop.run_until([&] { return cache->ready(); }));
    }
    ~Instance() {
        greylist.reset();
        cache.reset();
    }

    // The outcome, and how long it took.
    std::pair<GreylistOutcome, milliseconds> attempt(const std::string& triplet, int64_t now_ms,
                                                     const GreylistRules& r = rules()) {
        std::optional<GreylistOutcome> got;
        const auto start = steady_clock::now();
        greylist->attempt(triplet, r, now_ms, [&](GreylistOutcome o) { got = o; });
        REQUIRE(loop.run_until([&] { return got.has_value(); }, milliseconds(10000)));
        const auto took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - start);
        // Let the write behind it reach Redis before anyone looks.
        loop.run_until([&] { return cache->in_flight() == 0; }, milliseconds(2000));
        return {*got, took};
    }
};

long long number(const std::string& cli_output) { return std::stoll(cli_output); }

}  // namespace

TEST_CASE("redis greylist: the key is the prefix, grey:, and the triplet; the record reads back") {
    CHECK(redis_greylist_key("smtpscreen:", kTriplet) == kKey);
    const auto commands = redis_greylist_store_commands("k", GreylistEntry{1000, true, 2000});
    REQUIRE(commands.size() == 4);
    CHECK(commands[0] == RedisCommand{"MULTI"});
    CHECK(commands[1] == RedisCommand{"HSET", "k", "first_seen", "1000", "passed", "1", "expires", "2000"});
    CHECK(commands[2] == RedisCommand{"PEXPIREAT", "k", "2000"});
    CHECK(commands[3] == RedisCommand{"EXEC"});
    CHECK(decode_redis_greylist({{"first_seen", "1000"}, {"passed", "1"}, {"expires", "2000"}}) ==
          GreylistEntry{1000, true, 2000});
    CHECK(decode_redis_greylist({{"expires", "2000"}, {"first_seen", "1000"}}) == GreylistEntry{1000, false, 2000});
    // No key, or not a whole number of milliseconds: a new triplet.
    CHECK_FALSE(decode_redis_greylist({}));
    CHECK_FALSE(decode_redis_greylist({{"first_seen", "1000"}, {"passed", "1"}}));
    CHECK_FALSE(decode_redis_greylist({{"first_seen", "soon"}, {"expires", "2000"}}));
}

TEST_CASE("redis greylist: a triplet first tried on one instance passes when retried on the other") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    Instance b(settings, std::make_shared<RedisOutage>(settings.address, log));
    const int64_t start = unix_ms();
    const int64_t delay = rules().delay.count();

    CHECK(a.attempt(kTriplet, start).first == GreylistOutcome::New);
    // The documented record: the first attempt, not passed, until the retry window ends.
    CHECK(server.cli({"HGET", kKey, "first_seen"}) == std::to_string(start) + "\n");
    CHECK(server.cli({"HGET", kKey, "passed"}) == "0\n");
    CHECK(server.cli({"HGET", kKey, "expires"}) == std::to_string(start + rules().retry_window.count()) + "\n");
    const long long window_ttl = number(server.cli({"PTTL", kKey}));
    CHECK(window_ttl > rules().retry_window.count() - 60000);
    CHECK(window_ttl <= rules().retry_window.count());

    // B retries too early: refused, and the wait still counts from A's first attempt.
    CHECK(b.attempt(kTriplet, start + delay - 1).first == GreylistOutcome::TooEarly);
    CHECK(server.cli({"HGET", kKey, "first_seen"}) == std::to_string(start) + "\n");
    // B retries after the delay: passes, and the triplet is kept for greylist.ttl.
    CHECK(b.attempt(kTriplet, start + delay).first == GreylistOutcome::Retried);
    CHECK(server.cli({"HGET", kKey, "passed"}) == "1\n");
    CHECK(number(server.cli({"PTTL", kKey})) > rules().ttl.count() - 60000 + delay);
    // A sees that it passed.
    CHECK(a.attempt(kTriplet, start + delay + 1000).first == GreylistOutcome::Known);
    // Another triplet is its own.
    CHECK(a.attempt("192.0.2.0/24:list@example.org:other@example.net", start + delay).first == GreylistOutcome::New);
    CHECK(number(server.cli({"EXISTS", kKey})) == 1);
    CHECK(err.count("Redis at") == 0);
}

TEST_CASE("redis greylist: a record another tool wrote is read; Redis drops one at its expiry") {
    RedisServer server;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    const int64_t now = unix_ms();
    // Pre-seeded as smtpscreen.ini(5) documents it: a triplet that passed.
    server.cli({"HSET", kKey, "first_seen", std::to_string(now - 86400000), "passed", "1", "expires",
                std::to_string(now + 86400000)});
    server.cli({"PEXPIREAT", kKey, std::to_string(now + 86400000)});
    CHECK(a.attempt(kTriplet, now).first == GreylistOutcome::Known);

    // A wait whose retry window ends in 300 ms: Redis drops it, and the triplet is new.
    GreylistRules short_window = rules();
    short_window.delay = Millis(100);
    short_window.retry_window = Millis(300);
    const std::string other = "192.0.2.0/24:a@example.org:b@example.net";
    CHECK(a.attempt(other, unix_ms(), short_window).first == GreylistOutcome::New);
    const auto give_up = steady_clock::now() + milliseconds(3000);
    while (server.cli({"EXISTS", "smtpscreen:grey:" + other}) != "0\n" && steady_clock::now() < give_up) {
        a.loop.run_until([] { return false; }, milliseconds(20));
    }
    CHECK(server.cli({"EXISTS", "smtpscreen:grey:" + other}) == "0\n");
    CHECK(a.attempt(other, unix_ms(), short_window).first == GreylistOutcome::New);
}

TEST_CASE("redis greylist: a frozen redis-server delays no RCPT beyond cache.redis_timeout and lets it through") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server, Millis(150));
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    CHECK(a.attempt(kTriplet, unix_ms()).first == GreylistOutcome::New);

    server.freeze();
    const auto [first, waited] = a.attempt(kTriplet, unix_ms());
    CHECK(first == GreylistOutcome::Unanswered);  // not refused: Redis is away, not the client
    CHECK(waited >= milliseconds(140));
    CHECK(waited < milliseconds(1000));
    // While it is down, at once, and the outage is said once.
    const auto [second, quick] = a.attempt("192.0.2.0/24:x@example.org:y@example.net", unix_ms());
    CHECK(second == GreylistOutcome::Unanswered);
    CHECK(quick < milliseconds(100));
    CHECK(err.count("cannot answer greylisting") == 1);
    CHECK(err.count("RCPTs pass without greylisting until it answers again") == 1);

    server.thaw();
    REQUIRE(a.loop.run_until([&] { return a.cache->ready(); }, milliseconds(5000)));
    // Greylisting again: the first triplet is still waiting (too early), not passed.
    CHECK(a.attempt(kTriplet, unix_ms()).first == GreylistOutcome::TooEarly);
    CHECK(err.count("cache: Redis at " + settings.address + " answers greylisting again") == 1);
    CHECK(err.count("cannot answer greylisting") == 1);
}

TEST_CASE("redis greylist: an error reply lets the RCPT through at once, logged once, on a connection that stays") {
    RedisServer server;
    StderrCapture err;
    Logger log{false, "smtpscreen-test", true};
    const auto settings = settings_for(server);
    Instance a(settings, std::make_shared<RedisOutage>(settings.address, log));
    server.cli({"SET", kKey, "not a hash"});
    CHECK(a.attempt(kTriplet, unix_ms()).first == GreylistOutcome::Unanswered);
    CHECK(a.attempt(kTriplet, unix_ms()).first == GreylistOutcome::Unanswered);
    CHECK(err.count("cannot answer greylisting: WRONGTYPE") == 1);
    CHECK(a.cache->ready());
    CHECK(a.attempt("192.0.2.0/24:x@example.org:y@example.net", unix_ms()).first == GreylistOutcome::New);
    CHECK(err.count("answers greylisting again") == 1);
}
