// The auto-ban of ban.after: how a ban is made from the last one (doubling, the cap,
// forgetting), the bounded count of failures, and the three stores a ban is kept in
// (memory; the lmdb file, beside the verdicts and through a reopen; a real Redis, as
// the daemon's loop and the cache tools see it).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/ban_record.h"
#include "cache/lmdb_file_check.h"
#include "cache/redis_blocking.h"
#include "cache/redis_cache.h"
#include "cache/verdict_cache.h"
#include "core/address.h"
#include "core/log.h"
#include "edge/ban.h"
#include "edge/failure_counts.h"
#include "fixtures.h"
#include "redis_server.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {

constexpr int64_t kHour = 3600000;
constexpr int64_t kNow = 1'800'000'000'000;  // Unix milliseconds, 2027

BanRules rules(uint32_t after, int64_t period_ms = 60000) {
    BanRules r;
    r.after = RateLimit{after, Millis(period_ms)};
    r.time = Millis(kHour);
    r.max_time = Millis(7 * 24 * kHour);
    return r;
}

Endpoint ip(const std::string& text) {
    auto e = Endpoint::parse_ip(text);
    REQUIRE(e);
    return *e;
}

std::optional<Ban> lookup(BanStore& store, const std::string& client) {
    std::optional<Ban> got;
    bool called = false;
    store.lookup_ban(client, [&](std::optional<Ban> b) {
        called = true;
        got = b;
    });
    REQUIRE(called);  // embedded stores answer inline
    return got;
}

Ban ban_until(int64_t until_ms, uint32_t count = 1) { return Ban{until_ms, until_ms + 7 * 24 * kHour, count, 3}; }

}  // namespace

TEST_CASE("ban: a first ban lasts ban.time, each repeat twice the last, never more than ban.max_time") {
    const BanRules r = rules(3);
    Ban first = next_ban(std::nullopt, r, kNow, 3);
    CHECK(first.count == 1);
    CHECK(first.until_ms == kNow + kHour);
    CHECK(first.keep_until_ms == first.until_ms + 7 * 24 * kHour);
    CHECK(first.failures == 3);

    // Banned again after the first ended, while it is remembered: 2h, 4h, 8h, ...
    std::optional<Ban> last = first;
    int64_t now = kNow;
    std::vector<int64_t> lengths;
    for (int i = 0; i < 10; ++i) {
        now = last->until_ms + 1000;
        last = next_ban(last, r, now, 3);
        lengths.push_back(last->until_ms - now);
    }
    CHECK(lengths[0] == 2 * kHour);
    CHECK(lengths[1] == 4 * kHour);
    CHECK(lengths[2] == 8 * kHour);
    CHECK(lengths[6] == 128 * kHour);
    CHECK(lengths[7] == 168 * kHour);  // 256h is past the cap: 7d
    CHECK(lengths[9] == 168 * kHour);
    CHECK(last->count == 11);
}

TEST_CASE("ban: a client quiet for ban.max_time after its last ban starts again at ban.time") {
    const BanRules r = rules(3);
    const Ban first = next_ban(std::nullopt, r, kNow, 3);
    const Ban again = next_ban(first, r, first.keep_until_ms + 1, 4);
    CHECK(again.count == 1);
    CHECK(again.until_ms - (first.keep_until_ms + 1) == kHour);
    CHECK(again.failures == 4);
}

TEST_CASE("ban: a ban.time longer than ban.max_time is cut to it; a huge count does not overflow") {
    BanRules r = rules(1);
    r.time = Millis(10 * kHour);
    r.max_time = Millis(2 * kHour);
    CHECK(next_ban(std::nullopt, r, kNow, 1).until_ms == kNow + 2 * kHour);
    Ban many{kNow, kNow + 100 * kHour, 4'000'000'000u, 1};
    const Ban next = next_ban(many, rules(1), kNow + 1, 1);
    CHECK(next.until_ms == kNow + 1 + 168 * kHour);
}

TEST_CASE("failure counts: the N-th failure within PERIOD bans, and the count starts again after it") {
    FailureCounts counts;
    const BanRules r = rules(3, 60000);
    const Endpoint a = ip("192.0.2.7");
    CHECK_FALSE(counts.fail_now(a, r, 1000));
    CHECK_FALSE(counts.fail_now(a, r, 2000));
    CHECK_FALSE(counts.fail_now(ip("192.0.2.8"), r, 2500));  // another client counts apart
    auto third = counts.fail_now(a, r, 3000);
    REQUIRE(third);
    CHECK(*third == 3);
    // The ban took the count: the next failures count from one.
    CHECK_FALSE(counts.fail_now(a, r, 4000));
    CHECK_FALSE(counts.fail_now(a, r, 5000));
    CHECK(counts.fail_now(a, r, 6000));
}

TEST_CASE("failure counts: failures further apart than PERIOD never add up") {
    FailureCounts counts;
    const BanRules r = rules(2, 60000);
    const Endpoint a = ip("2001:db8::7");
    for (uint64_t t = 0; t < 10; ++t) CHECK_FALSE(counts.fail_now(a, r, 1000 + t * 61000));
    CHECK(counts.fail_now(a, r, 1000 + 9 * 61000 + 100));
}

TEST_CASE("failure counts: off counts nothing and makes no table") {
    FailureCounts counts;
    for (int i = 0; i < 5; ++i) CHECK_FALSE(counts.fail_now(ip("192.0.2.1"), rules(0), 1000));
    CHECK(counts.size() == 0);
}

TEST_CASE("failure counts: a flood of distinct addresses stays within limits.rate_table_size") {
    FailureCounts counts;
    BanRules r = rules(2, 60000);
    r.table_size = 1000;
    size_t bans = 0;
    size_t most = 0;
    for (uint32_t i = 0; i < 20000; ++i) {
        const std::string a = "10.0." + std::to_string(i >> 8) + "." + std::to_string(i & 255);
        if (counts.fail_now(*Endpoint::parse_ip(a), r, 1000)) ++bans;
        most = std::max(most, counts.size());
    }
    CHECK(bans == 0);
    CHECK(most == 1000);
    CHECK(counts.size() == 1000);
    // The most recent clients are still counted; the first ones were forgotten.
    CHECK(counts.fail_now(ip("10.0.78.31"), r, 1001));  // 19999
    CHECK_FALSE(counts.fail_now(ip("10.0.0.0"), r, 1001));
}

TEST_CASE("memory bans: stored, looked up, lifted, and forgotten once no longer remembered") {
    auto store = open_memory_bans();
    const int64_t later = std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
                              .count() + kHour;
    store->store_ban("192.0.2.1", ban_until(later, 2));
    auto got = lookup(*store, "192.0.2.1");
    REQUIRE(got);
    CHECK(*got == ban_until(later, 2));
    CHECK_FALSE(lookup(*store, "192.0.2.2"));
    store->store_ban("192.0.2.3", Ban{1000, 2000, 1, 3});  // remembered until 1970
    CHECK_FALSE(lookup(*store, "192.0.2.3"));
    size_t listed = 0;
    store->for_each_ban([&](const std::string& a, const Ban&) {
        CHECK(a == "192.0.2.1");
        ++listed;
    });
    CHECK(listed == 1);
    CHECK(store->erase_ban("192.0.2.1"));
    CHECK_FALSE(store->erase_ban("192.0.2.1"));
    CHECK_FALSE(lookup(*store, "192.0.2.1"));
}

TEST_CASE("memory bans: bounded; when full, the record forgotten soonest goes first") {
    auto store = open_memory_bans(10);
    const int64_t base = kNow;
    for (int i = 0; i < 50; ++i) store->store_ban("192.0.2." + std::to_string(i), Ban{base + i, base + i, 1, 1});
    size_t n = 0;
    store->for_each_ban([&](const std::string& a, const Ban&) {
        ++n;
        CHECK(std::stoi(a.substr(a.rfind('.') + 1)) >= 40);
    });
    CHECK(n == 10);
}

TEST_CASE("lmdb bans: beside the verdicts in one file, through a reopen, lifted by the tools") {
    TempDir dir("smtpscreen-bans");
    Logger log(false, "smtpscreen-test", false);
    const std::string path = dir.path("c");
    const Ban ban = ban_until(kNow + kHour, 3);
    {
        auto stores = open_lmdb_stores(path, log);
        TestResults pass;
        pass[Test::Pregreet] = 4'000'000'000;
        stores.verdicts->store("192.0.2.1", pass);
        stores.bans->store_ban("192.0.2.9", ban);
        stores.bans->store_ban("2001:db8::9", ban);
    }
    // The file check that runs before LMDB maps the file reads bans as records.
    auto check = check_lmdb_file(path);
    CHECK(check.verdict == LmdbFileCheck::Verdict::Usable);
    CHECK(check.records == 3);
    auto stores = open_lmdb_stores(path, log);
    auto got = lookup(*stores.bans, "192.0.2.9");
    REQUIRE(got);
    CHECK(*got == ban);
    CHECK_FALSE(lookup(*stores.bans, "192.0.2.1"));  // a verdict is no ban
    std::vector<std::string> verdicts;
    stores.verdicts->for_each([&](const std::string& a, const TestResults&) { verdicts.push_back(a); });
    CHECK(verdicts == std::vector<std::string>{"192.0.2.1"});
    std::vector<std::string> bans;
    stores.bans->for_each_ban([&](const std::string& a, const Ban&) { bans.push_back(a); });
    CHECK(bans == std::vector<std::string>{"192.0.2.9", "2001:db8::9"});
    // A second handle, as `smtpscreen cache delete` opens it beside the daemon.
    auto tools = open_lmdb_stores(path, log);
    CHECK(tools.bans->erase_ban("192.0.2.9"));
    CHECK_FALSE(tools.bans->erase_ban("192.0.2.9"));
    CHECK_FALSE(lookup(*stores.bans, "192.0.2.9"));
    std::optional<TestResults> verdict;
    stores.verdicts->lookup("192.0.2.1", [&](std::optional<TestResults> r) { verdict = r; });
    CHECK(verdict);  // lifting a ban leaves the verdicts alone
}

TEST_CASE("lmdb bans: a cleanup drops the bans no longer remembered and keeps the others") {
    TempDir dir("smtpscreen-bans");
    Logger log(false, "smtpscreen-test", false);
    auto stores = open_lmdb_stores(dir.path("c"), log);
    const int64_t now_s = kNow / 1000;
    stores.bans->store_ban("192.0.2.1", Ban{kNow - 2 * kHour, kNow - kHour, 1, 3});  // forgotten
    stores.bans->store_ban("192.0.2.2", Ban{kNow - kHour, kNow + kHour, 1, 3});      // ended, remembered
    VerdictCache::Cleanup cleanup;
    while (!cleanup.done) stores.verdicts->cleanup_step(now_s, 1, cleanup);
    CHECK(cleanup.dropped == 1);
    CHECK(cleanup.retained == 1);
    CHECK_FALSE(lookup(*stores.bans, "192.0.2.1"));
    CHECK(lookup(*stores.bans, "192.0.2.2"));
}

TEST_CASE("redis bans: one hash at <prefix>ban:<address>, expiring when no longer remembered") {
    RedisServer server;
    const RedisSettings settings = settings_for(server, Millis(2000));
    Logger log(false, "smtpscreen-test", true);
    UvLoop loop;
    auto cache = std::make_shared<RedisLoopCache>(&loop.loop, settings,
                                                  std::make_shared<RedisOutage>(settings.address, log));
    REQUIRE(loop.run_until([&] { return cache->ready(); }));
    const int64_t now = std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
    const Ban ban{now + kHour, now + 2 * kHour, 2, 5};
    cache->store_ban("192.0.2.1", ban);
    std::optional<Ban> got;
    bool called = false;
    cache->lookup_ban("192.0.2.1", [&](std::optional<Ban> b) {
        called = true;
        got = b;
    });
    REQUIRE(loop.run_until([&] { return called; }));
    REQUIRE(got);
    CHECK(got->until_ms == ban.until_ms);
    CHECK(got->count == 2);
    CHECK(got->failures == 5);
    CHECK(server.cli({"HGET", "smtpscreen:ban:192.0.2.1", "until"}) == std::to_string(ban.until_ms) + "\n");
    const int64_t pttl = std::stoll(server.cli({"PTTL", "smtpscreen:ban:192.0.2.1"}));
    CHECK(pttl > kHour);
    CHECK(pttl <= 2 * kHour);

    // The cache tools: the ban is listed apart from the verdicts, and lifted.
    auto tools = open_redis_cache_blocking(settings, Millis(2000));
    TestResults pass;
    pass[Test::Pregreet] = 4'000'000'000;
    tools.verdicts->store("192.0.2.2", pass);
    std::vector<std::string> verdicts;
    tools.verdicts->for_each([&](const std::string& a, const TestResults&) { verdicts.push_back(a); });
    CHECK(verdicts == std::vector<std::string>{"192.0.2.2"});
    std::vector<std::string> bans;
    tools.bans->for_each_ban([&](const std::string& a, const Ban&) { bans.push_back(a); });
    CHECK(bans == std::vector<std::string>{"192.0.2.1"});
    CHECK(tools.bans->erase_ban("192.0.2.1"));
    CHECK(server.cli({"EXISTS", "smtpscreen:ban:192.0.2.1"}) == "0\n");

    // A ban another tool seeds with "until" alone is a first ban.
    server.cli({"HSET", "smtpscreen:ban:192.0.2.3", "until", std::to_string(now + kHour)});
    called = false;
    cache->lookup_ban("192.0.2.3", [&](std::optional<Ban> b) {
        called = true;
        got = b;
    });
    REQUIRE(loop.run_until([&] { return called; }));
    REQUIRE(got);
    CHECK(got->in_force(now));
    CHECK(got->count == 1);
}

TEST_CASE("ban records: the lmdb bytes read back, and a verdict's bytes are no ban") {
    const Ban ban{kNow + kHour, kNow + 9 * kHour, 7, 12};
    CHECK(decode_lmdb_ban(encode_lmdb_ban(ban)) == ban);
    CHECK_FALSE(decode_lmdb_ban(std::string(25, '\1')));
    CHECK_FALSE(decode_lmdb_ban(encode_lmdb_ban(ban).substr(1)));
    CHECK(is_ban_key("ban:192.0.2.1"));
    CHECK_FALSE(is_ban_key("192.0.2.1"));
    CHECK_FALSE(is_ban_key("ba::1"));
}
