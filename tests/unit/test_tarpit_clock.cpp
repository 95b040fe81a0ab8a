// The loop's one timer for every tarpitted session's next octet (proxy/tarpit_clock.h),
// on a real libuv loop: wake-ups in the order of their due times and never before
// them, whatever order they were asked in; a cancelled or destroyed waiter is not
// woken; a waiter that asks again from its wake-up (as a session does at each octet)
// is woken one delay later.
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "fixtures.h"
#include "proxy/tarpit_clock.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {

struct Woken {
    int id;
    uint64_t at;
};

struct Sleeper {
    Sleeper(uv_loop_t* loop, std::vector<Woken>& log, int id)
        : loop(loop), log(log), id(id), waiter([](void* self) { static_cast<Sleeper*>(self)->woken(); }, this) {}
    void woken() {
        log.push_back({id, uv_now(loop)});
        if (again && clock && --again > 0) clock->schedule(waiter, delay, uv_now(loop) + delay);
    }
    uv_loop_t* loop;
    std::vector<Woken>& log;
    int id;
    TarpitClock::Waiter waiter;
    TarpitClock* clock = nullptr;
    uint64_t delay = 0;
    int again = 0;
};

}  // namespace

TEST_CASE("tarpit clock: wakes each waiter at or after its due time, in due order, whatever the order asked") {
    UvLoop l;
    TarpitClock clock(&l.loop);
    std::vector<Woken> log;
    uv_update_time(&l.loop);
    const uint64_t t0 = uv_now(&l.loop);
    std::vector<std::unique_ptr<Sleeper>> s;
    for (int i = 0; i < 6; ++i) s.push_back(std::make_unique<Sleeper>(&l.loop, log, i));
    // In order for delay 40, then two out of order (a walk back from the tail), and one
    // in a second list (another delay, as after a reload).
    clock.schedule(s[0]->waiter, 40, t0 + 40);
    clock.schedule(s[1]->waiter, 40, t0 + 80);
    clock.schedule(s[2]->waiter, 40, t0 + 120);
    clock.schedule(s[3]->waiter, 40, t0 + 60);
    clock.schedule(s[4]->waiter, 40, t0 + 20);
    clock.schedule(s[5]->waiter, 100, t0 + 100);
    CHECK(s[3]->waiter.waiting());

    l.run_until([&] { return log.size() == 6; });
    REQUIRE(log.size() == 6);
    const std::vector<int> order{4, 0, 3, 1, 5, 2};
    const std::vector<uint64_t> due{20, 40, 60, 80, 100, 120};
    for (size_t i = 0; i < log.size(); ++i) {
        CHECK(log[i].id == order[i]);
        CHECK(log[i].at >= t0 + due[i]);
    }
    for (auto& x : s) CHECK_FALSE(x->waiter.waiting());
}

TEST_CASE("tarpit clock: a cancelled or destroyed waiter is not woken, the others are") {
    UvLoop l;
    TarpitClock clock(&l.loop);
    std::vector<Woken> log;
    uv_update_time(&l.loop);
    const uint64_t t0 = uv_now(&l.loop);
    auto a = std::make_unique<Sleeper>(&l.loop, log, 1);
    auto b = std::make_unique<Sleeper>(&l.loop, log, 2);
    auto c = std::make_unique<Sleeper>(&l.loop, log, 3);
    clock.schedule(a->waiter, 30, t0 + 10);  // the head
    clock.schedule(b->waiter, 30, t0 + 20);  // the middle
    clock.schedule(c->waiter, 30, t0 + 30);  // the tail
    a->waiter.cancel();
    CHECK_FALSE(a->waiter.waiting());
    b.reset();  // a session destroyed while it waits leaves the list
    // Had the first two been left in, they would have been woken before the tail.
    l.run_until([&] { return !log.empty(); });
    REQUIRE(log.size() == 1);
    CHECK(log[0].id == 3);
    // Scheduled again, a waiter is moved, not listed twice.
    clock.schedule(a->waiter, 30, uv_now(&l.loop) + 30);
    clock.schedule(a->waiter, 30, uv_now(&l.loop) + 10);
    l.run_until([&] { return log.size() == 2; });
    l.run_for(std::chrono::milliseconds(60));
    REQUIRE(log.size() == 2);
    CHECK(log[1].id == 1);
}

TEST_CASE("tarpit clock: a waiter that asks again from its wake-up comes back one delay later, each time") {
    UvLoop l;
    TarpitClock clock(&l.loop);
    std::vector<Woken> log;
    uv_update_time(&l.loop);
    Sleeper a(&l.loop, log, 1), b(&l.loop, log, 2);
    for (Sleeper* s : {&a, &b}) {
        s->clock = &clock;
        s->delay = 15;
        s->again = 4;
    }
    clock.schedule(a.waiter, 15, uv_now(&l.loop) + 15);
    clock.schedule(b.waiter, 15, uv_now(&l.loop) + 20);
    l.run_until([&] { return log.size() == 8; });
    REQUIRE(log.size() == 8);
    uint64_t last[3] = {0, 0, 0};
    for (const Woken& w : log) {
        if (last[w.id]) CHECK(w.at >= last[w.id] + 15);
        last[w.id] = w.at;
    }
    CHECK_FALSE(a.waiter.waiting());
    CHECK_FALSE(b.waiter.waiting());
}
