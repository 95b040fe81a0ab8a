// The loop's one timer for every session's deadline (core/deadline_timers.h), on a
// real libuv loop: order, ties, re-arming, stopping and destroying from a callback,
// and a deadline re-armed at 0 from its own callback waiting for the next turn.
#include <doctest/doctest.h>

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/deadline_timers.h"

using namespace smtpscreen;

namespace {

struct Loop {
    uv_loop_t loop{};
    Loop() { uv_loop_init(&loop); }
    ~Loop() {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
};

// A deadline that records its name when it fires, then runs `then` (if any).
struct Named : DeadlineListener {
    Named(DeadlineTimers& timers, std::string n, std::vector<std::string>& log)
        : deadline(timers, *this), name(std::move(n)), fired(log) {}
    void on_deadline() override {
        fired.push_back(name);
        if (then) then();
    }
    Deadline deadline;
    std::string name;
    std::vector<std::string>& fired;
    std::function<void()> then;
};

}  // namespace

TEST_CASE("deadlines fire in the order they are due, ties in the order they were armed") {
    Loop l;
    std::vector<std::string> fired;
    {
        DeadlineTimers timers(&l.loop);
        Named a(timers, "a", fired), b(timers, "b", fired), c(timers, "c", fired), d(timers, "d", fired);
        c.deadline.start(30);
        a.deadline.start(10);
        d.deadline.start(30);
        b.deadline.start(20);
        CHECK(timers.armed() == 4);
        uv_run(&l.loop, UV_RUN_DEFAULT);  // returns once nothing is armed: the timer is stopped
        CHECK(timers.armed() == 0);
        CHECK_FALSE(a.deadline.armed());
        timers.close();
    }
    CHECK(fired == std::vector<std::string>{"a", "b", "c", "d"});
}

TEST_CASE("a stopped or destroyed deadline never fires; a re-armed one fires at its new time only") {
    Loop l;
    std::vector<std::string> fired;
    {
        DeadlineTimers timers(&l.loop);
        Named a(timers, "a", fired), b(timers, "b", fired);
        auto gone = std::make_unique<Named>(timers, "gone", fired);
        a.deadline.start(10);
        b.deadline.start(5);
        gone->deadline.start(1);
        a.deadline.stop();
        b.deadline.start(40);  // later than before
        gone.reset();
        Named c(timers, "c", fired);
        c.deadline.start(20);
        a.deadline.start(30);
        uv_run(&l.loop, UV_RUN_DEFAULT);
        timers.close();
    }
    CHECK(fired == std::vector<std::string>{"c", "a", "b"});
}

TEST_CASE("a callback may stop and destroy another deadline due in the same pass, and re-arm its own") {
    Loop l;
    std::vector<std::string> fired;
    {
        DeadlineTimers timers(&l.loop);
        Named first(timers, "first", fired);
        auto victim = std::make_unique<Named>(timers, "victim", fired);
        Named other(timers, "other", fired);
        int rounds = 0;
        first.then = [&] {
            victim.reset();
            if (++rounds < 3) first.deadline.start(5);
        };
        first.deadline.start(10);
        victim->deadline.start(10);
        other.deadline.start(10);
        uv_run(&l.loop, UV_RUN_DEFAULT);
        timers.close();
    }
    CHECK(fired == std::vector<std::string>{"first", "other", "first", "first"});
}

TEST_CASE("a deadline re-armed at 0 from its callback fires once per turn of the loop, not in a loop") {
    Loop l;
    std::vector<std::string> fired;
    DeadlineTimers timers(&l.loop);
    Named zero(timers, "zero", fired);
    zero.then = [&] { zero.deadline.start(0); };
    zero.deadline.start(0);
    uv_run(&l.loop, UV_RUN_NOWAIT);  // returns: the re-armed deadline waits
    CHECK(fired.size() == 1);
    uv_sleep(3);
    uv_run(&l.loop, UV_RUN_NOWAIT);
    CHECK(fired.size() == 2);
    zero.deadline.stop();
    timers.close();
}

TEST_CASE("many deadlines armed in any order come out sorted") {
    Loop l;
    std::vector<std::string> fired;
    {
        DeadlineTimers timers(&l.loop);
        std::vector<std::unique_ptr<Named>> all;
        for (int i = 0; i < 200; ++i) {
            const int after = (i * 37) % 50;  // several per millisecond: ties too
            all.push_back(std::make_unique<Named>(timers, std::to_string(after * 1000 + i), fired));
            all.back()->deadline.start(static_cast<uint64_t>(after));
        }
        for (int i = 0; i < 200; i += 7) all[static_cast<size_t>(i)]->deadline.stop();
        uv_run(&l.loop, UV_RUN_DEFAULT);
        timers.close();
    }
    REQUIRE(fired.size() == 200 - 29);
    for (size_t i = 1; i < fired.size(); ++i) CHECK(std::stoi(fired[i - 1]) < std::stoi(fired[i]));
}
