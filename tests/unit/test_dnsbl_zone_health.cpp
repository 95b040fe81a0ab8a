// The rule that switches a DNSBL zone off (dnsbl/zone_health.h): only a zone that has
// stopped answering is skipped, never one that drops some queries of a burst while it
// answers the others (bench/README.md, findings about smtpscreen under load, item 1).
#include <doctest/doctest.h>

#include <cstdint>

#include "dnsbl/zone_health.h"

using namespace smtpscreen;

namespace {

constexpr uint64_t kTimeout = 3000;  // dnsbl.timeout, ms
constexpr int kRun = ZoneHealth::kTimeoutsBeforeSkipping;

// `count` queries sent at `sent`, each timing out at its deadline; true if one of them
// started a skip.
bool time_out(ZoneHealth& zone, uint64_t sent, int count) {
    bool skip = false;
    for (int i = 0; i < count; ++i) skip = zone.timed_out(sent, sent + kTimeout) || skip;
    return skip;
}

}  // namespace

TEST_CASE("zone health: a zone that never answered is skipped after five timeouts in a row") {
    ZoneHealth zone;
    for (int i = 0; i < kRun - 1; ++i) {
        CHECK_FALSE(zone.timed_out(1000 + i, 1000 + i + kTimeout));
        CHECK_FALSE(zone.skipped(1000 + i + kTimeout));
    }
    const uint64_t now = 1000 + kRun + kTimeout;
    CHECK(zone.timed_out(1000 + kRun, now));
    CHECK(zone.silent_timeouts() == kRun);
    CHECK(zone.skipped(now));
    CHECK(zone.skipped(now + ZoneHealth::kSkipMillis - 1));
    CHECK_FALSE(zone.skipped(now + ZoneHealth::kSkipMillis));
}

TEST_CASE("zone health: a zone that stops answering is skipped once its silent queries time out") {
    ZoneHealth zone;
    CHECK_FALSE(zone.answered(10'000));
    // Sent after the last answer, none answered: the zone is down.
    CHECK_FALSE(time_out(zone, 10'001, kRun - 1));
    CHECK(zone.timed_out(10'002, 10'002 + kTimeout));
    CHECK(zone.skipped(10'002 + kTimeout));
}

TEST_CASE("zone health: timeouts of queries sent before an answer never skip the zone (a burst)") {
    // rbldnsd's receive buffer overflows: of the queries sent at 0..999 ms, every third
    // is dropped, the others are answered as they come. The dropped ones time out 3 s
    // later, long after the last answer, and in a row, as completion order sees them.
    ZoneHealth zone;
    for (uint64_t t = 0; t < 1000; ++t) {
        if (t % 3 != 0) zone.answered(t + 2);
    }
    bool skip = false;
    for (uint64_t t = 0; t < 1000; t += 3) skip = zone.timed_out(t, t + kTimeout) || skip;
    CHECK_FALSE(skip);
    CHECK(zone.silent_timeouts() == 0);
    CHECK_FALSE(zone.skipped(1000 + kTimeout));
}

TEST_CASE("zone health: a query sent in the same millisecond as the last answer does not count") {
    ZoneHealth zone;
    zone.answered(500);
    CHECK_FALSE(time_out(zone, 500, 2 * kRun));
    CHECK(zone.silent_timeouts() == 0);
    // One millisecond later, the zone has had a whole timeout to answer.
    CHECK(time_out(zone, 501, kRun));
}

TEST_CASE("zone health: any answer resets the run") {
    ZoneHealth zone;
    CHECK_FALSE(time_out(zone, 100, kRun - 1));
    zone.answered(200);  // e.g. NXDOMAIN, or SERVFAIL: the server is there
    CHECK(zone.silent_timeouts() == 0);
    CHECK_FALSE(time_out(zone, 300, kRun - 1));
    CHECK_FALSE(zone.skipped(300 + kTimeout));
    CHECK(time_out(zone, 300, 1));
}

TEST_CASE("zone health: an answer ends a skip, and says so once") {
    ZoneHealth zone;
    REQUIRE(time_out(zone, 100, kRun));
    CHECK(zone.skipped(100 + kTimeout + 1));
    // A query sent before the skip is answered late (within its timeout).
    CHECK(zone.answered(100 + kTimeout + 500));
    CHECK_FALSE(zone.skipped(100 + kTimeout + 501));
    CHECK_FALSE(zone.answered(100 + kTimeout + 600));
}

TEST_CASE("zone health: an answer after the skip ran out still says the zone is back") {
    ZoneHealth zone;
    REQUIRE(time_out(zone, 100, kRun));
    const uint64_t after = 100 + kTimeout + ZoneHealth::kSkipMillis + 10;
    CHECK_FALSE(zone.skipped(after));
    CHECK(zone.answered(after));
}

TEST_CASE("zone health: timeouts during a skip do not extend it; one more after it skips again") {
    ZoneHealth zone;
    const uint64_t start = 100 + kTimeout;
    REQUIRE(time_out(zone, 100, kRun));
    // Queries already in flight when the skip began time out during it.
    CHECK_FALSE(zone.timed_out(200, start + 1000));
    CHECK_FALSE(zone.timed_out(300, start + 2000));
    CHECK_FALSE(zone.skipped(start + ZoneHealth::kSkipMillis));
    // After the skip, the zone is asked again; its first timeout switches it off again.
    const uint64_t retry = start + ZoneHealth::kSkipMillis + 5;
    CHECK(zone.timed_out(retry, retry + kTimeout));
    CHECK(zone.skipped(retry + kTimeout + ZoneHealth::kSkipMillis - 1));
}
