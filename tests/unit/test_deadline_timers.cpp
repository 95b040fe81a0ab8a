// The loop's one timer for every session's deadline (core/deadline_timers.h), on a
// real libuv loop: order, ties, re-arming, stopping and destroying from a callback,
// a deadline re-armed at 0 from its own callback waiting for the next turn, and the
// lines (a tarpitted session's octets): in order, stopped, moved, re-armed.
#include <doctest/doctest.h>

#include <uv.h>

#include <functional>
#include <map>
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

// Lines: what a tarpitted session's next octet is armed in, one delay after its last.

namespace {

struct Woken {
    std::string name;
    uint64_t at;
};

// A deadline that records when it fired, and re-arms itself in its line `again` times,
// `delay` later each time, as a tarpitted session does at each octet.
struct Stepper : DeadlineListener {
    Stepper(DeadlineTimers& timers, uv_loop_t* loop, std::string n, std::vector<Woken>& log)
        : deadline(timers, *this), loop(loop), name(std::move(n)), log(log) {}
    void on_deadline() override {
        log.push_back({name, uv_now(loop)});
        if (again > 0 && --again > 0) deadline.start_in_line(delay, uv_now(loop) + delay);
    }
    Deadline deadline;
    uv_loop_t* loop;
    std::string name;
    std::vector<Woken>& log;
    uint64_t delay = 0;
    int again = 0;
};

}  // namespace

TEST_CASE("deadlines in lines fire at or after their time, in due order with the heap's, whatever the order asked") {
    Loop l;
    std::vector<Woken> log;
    {
        DeadlineTimers timers(&l.loop);
        uv_update_time(&l.loop);
        const uint64_t t0 = uv_now(&l.loop);
        std::vector<std::unique_ptr<Stepper>> s;
        for (const char* n : {"a", "b", "c", "d", "e", "f", "g"}) s.push_back(std::make_unique<Stepper>(timers, &l.loop, n, log));
        // In order in line 40; then two earlier than the line's last (they go to the
        // heap and still come out in order); one in a second line (another delay, as
        // after a reload), and one in the heap itself.
        s[0]->deadline.start_in_line(40, t0 + 40);
        s[1]->deadline.start_in_line(40, t0 + 80);
        s[2]->deadline.start_in_line(40, t0 + 120);
        s[3]->deadline.start_in_line(40, t0 + 60);
        s[4]->deadline.start_in_line(40, t0 + 20);
        s[5]->deadline.start_in_line(100, t0 + 100);
        s[6]->deadline.start(70);
        CHECK(timers.armed() == 7);
        uv_run(&l.loop, UV_RUN_DEFAULT);
        CHECK(timers.armed() == 0);
        for (auto& x : s) CHECK_FALSE(x->deadline.armed());
        timers.close();
        REQUIRE(log.size() == 7);
        const std::vector<std::string> order{"e", "a", "d", "g", "b", "f", "c"};
        const std::vector<uint64_t> due{20, 40, 60, 70, 80, 100, 120};
        for (size_t i = 0; i < log.size(); ++i) {
            CHECK(log[i].name == order[i]);
            CHECK(log[i].at >= t0 + due[i]);
        }
    }
}

TEST_CASE("a deadline stopped, destroyed or moved out of its line is not fired there; one asked again keeps its place") {
    Loop l;
    std::vector<Woken> log;
    {
        DeadlineTimers timers(&l.loop);
        uv_update_time(&l.loop);
        const uint64_t t0 = uv_now(&l.loop);
        Stepper a(timers, &l.loop, "a", log), c(timers, &l.loop, "c", log), d(timers, &l.loop, "d", log);
        auto b = std::make_unique<Stepper>(timers, &l.loop, "b", log);
        a.deadline.start_in_line(30, t0 + 10);   // the front
        b->deadline.start_in_line(30, t0 + 20);  // the middle
        c.deadline.start_in_line(30, t0 + 30);   // the back
        d.deadline.start_in_line(30, t0 + 30);
        c.deadline.start_in_line(30, t0 + 30);  // asked again: still before d
        a.deadline.stop();
        CHECK_FALSE(a.deadline.armed());
        b.reset();  // destroyed while it waits: it leaves the line
        d.deadline.start(60);  // from the line to the heap
        CHECK(timers.armed() == 2);
        uv_run(&l.loop, UV_RUN_DEFAULT);
        REQUIRE(log.size() == 2);
        CHECK(log[0].name == "c");
        CHECK(log[1].name == "d");
        CHECK(log[1].at >= t0 + 60);
        // Armed in a line again after firing from the heap, and moved within it.
        d.deadline.start_in_line(30, uv_now(&l.loop) + 30);
        d.deadline.start_in_line(30, uv_now(&l.loop) + 40);
        CHECK(timers.armed() == 1);
        uv_run(&l.loop, UV_RUN_DEFAULT);
        REQUIRE(log.size() == 3);
        CHECK(log[2].name == "d");
        timers.close();
    }
}

TEST_CASE("a deadline that re-arms in its line from its callback comes back one delay later, each time") {
    Loop l;
    std::vector<Woken> log;
    {
        DeadlineTimers timers(&l.loop);
        uv_update_time(&l.loop);
        Stepper a(timers, &l.loop, "a", log), b(timers, &l.loop, "b", log);
        for (Stepper* s : {&a, &b}) {
            s->delay = 15;
            s->again = 4;
        }
        a.deadline.start_in_line(15, uv_now(&l.loop) + 15);
        b.deadline.start_in_line(15, uv_now(&l.loop) + 20);
        uv_run(&l.loop, UV_RUN_DEFAULT);
        timers.close();
    }
    REQUIRE(log.size() == 8);
    std::map<std::string, uint64_t> last;
    for (const Woken& w : log) {
        if (last.count(w.name)) CHECK(w.at >= last[w.name] + 15);
        last[w.name] = w.at;
    }
}

TEST_CASE("a line's deadline armed during a pass waits for the next turn of the loop, even when due at once") {
    Loop l;
    std::vector<Woken> log;
    DeadlineTimers timers(&l.loop);
    Stepper a(timers, &l.loop, "a", log);
    a.delay = 0;
    a.again = 1000;
    a.deadline.start_in_line(0, uv_now(&l.loop));
    uv_run(&l.loop, UV_RUN_NOWAIT);
    CHECK(log.size() == 1);
    uv_sleep(3);
    uv_run(&l.loop, UV_RUN_NOWAIT);
    CHECK(log.size() == 2);
    a.deadline.stop();
    timers.close();
}
