// The tarpit (edge/tarpit.h): the pace of a tarpitted client's replies, its time
// limit, the bound on tarpitted clients across loops, its keys, and the dialog it
// gets (the enforce dialog, without STARTTLS).
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "edge/tarpit.h"
#include "fixtures.h"
#include "screen/smtp_dialog.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {

// Runs the stutter as the session's timer would, from `from` until nothing is being
// given out: each byte with the time it went out.
std::vector<std::pair<uint64_t, char>> run(Stutter& s, uint64_t from) {
    std::vector<std::pair<uint64_t, char>> out;
    uint64_t now = from;
    while (s.giving_out()) {
        now = std::max(now, s.wake_at());
        const Stutter::Tick t = s.tick(now, false);
        REQUIRE(t.step != Stutter::Step::TimeLimit);
        if (t.step == Stutter::Step::Byte) out.emplace_back(now, t.byte);
    }
    return out;
}

std::string text_of(const std::vector<std::pair<uint64_t, char>>& bytes) {
    std::string out;
    for (const auto& b : bytes) out += b.second;
    return out;
}

}  // namespace

TEST_CASE("tarpit: each byte of a reply goes out one delay after the one before, in order") {
    Stutter s(Millis(160), Millis(300000), 0);  // a grain of 10 ms: these times are on it
    s.queue("220 mx.example ESMTP\r\n", 1000);
    CHECK(s.giving_out());
    CHECK(s.wake_at() == 1160);
    // Nothing before its time, however often the timer is asked.
    for (uint64_t t : {1000, 1050, 1159}) CHECK(s.tick(t, false).step == Stutter::Step::Wait);
    const auto bytes = run(s, 1000);
    CHECK(text_of(bytes) == "220 mx.example ESMTP\r\n");
    REQUIRE(bytes.size() == 22);
    CHECK(bytes.front().first == 1160);
    for (size_t i = 1; i < bytes.size(); ++i) CHECK(bytes[i].first - bytes[i - 1].first == 160);
    CHECK_FALSE(s.giving_out());
}

TEST_CASE("tarpit: a late timer gives out one byte, never two, and the next is a whole delay later") {
    Stutter s(Millis(160), Millis(300000), 0);
    s.queue("250 ok\r\n", 0);
    auto t = s.tick(450, false);  // the loop was busy: 290 ms late
    CHECK(t.step == Stutter::Step::Byte);
    CHECK(t.byte == '2');
    CHECK(s.tick(450, false).step == Stutter::Step::Wait);
    CHECK(s.tick(609, false).step == Stutter::Step::Wait);
    CHECK(s.wake_at() == 610);
    t = s.tick(610, false);
    CHECK(t.step == Stutter::Step::Byte);
    CHECK(t.byte == '5');
}

TEST_CASE("tarpit: replies queued while one goes out follow it, in order, at the same pace") {
    Stutter s(Millis(10), Millis(300000), 0);
    s.queue("250 a\r\n", 0);
    CHECK(s.tick(10, false).byte == '2');
    CHECK(s.tick(20, false).byte == '5');
    s.queue("250 b\r\n", 25);
    const auto bytes = run(s, 25);
    CHECK(text_of(bytes) == "0 a\r\n250 b\r\n");
    CHECK(bytes.front().first == 30);
    for (size_t i = 1; i < bytes.size(); ++i) CHECK(bytes[i].first - bytes[i - 1].first == 10);
}

TEST_CASE("tarpit: a client that does not take its bytes gets no more, and the time limit ends it") {
    Stutter s(Millis(160), Millis(1600), 0);
    s.queue("250 ok\r\n", 0);
    CHECK(s.tick(160, false).step == Stutter::Step::Byte);
    // The last byte still waits in user space: nothing goes on top of it.
    uint64_t now = 160;
    Stutter::Tick t;
    do {
        now = s.wake_at();
        t = s.tick(now, true);
        CHECK(t.step != Stutter::Step::Byte);
    } while (t.step == Stutter::Step::Wait && now < 10000);
    CHECK(t.step == Stutter::Step::TimeLimit);
    // The limit counts from when its next byte was due: 320 + 1600.
    CHECK(now == 1920);
}

TEST_CASE("tarpit: the bytes of many clients fall due on the same few instants, never sooner than the delay") {
    Stutter a(Millis(1000), Millis(300000), 0);
    Stutter b(Millis(1000), Millis(300000), 0);
    CHECK(a.grain_ms() == 62);
    a.queue("220 a.example ESMTP\r\n", 1001);
    b.queue("220 b.example ESMTP\r\n", 1037);
    CHECK(a.wake_at() == b.wake_at());  // one wake-up of the loop for both
    for (Stutter* s : {&a, &b}) {
        const auto bytes = run(*s, 1001);
        REQUIRE(bytes.size() == 21);
        for (size_t i = 1; i < bytes.size(); ++i) {
            CHECK(bytes[i].first - bytes[i - 1].first >= 1000);
            CHECK(bytes[i].first - bytes[i - 1].first < 1000 + 62);
            CHECK(bytes[i].first % 62 == 0);
        }
    }
    CHECK(Stutter(Millis(20), Millis(1000), 0).grain_ms() == 1);
    CHECK(Stutter(Millis(60000), Millis(1000), 0).grain_ms() == 64);
}

TEST_CASE("tarpit: a reply longer than the time limit at this pace still goes out whole") {
    Stutter s(Millis(100), Millis(250), 0);
    s.queue("250-a\r\n250-b\r\n250 c\r\n", 0);
    CHECK(text_of(run(s, 0)) == "250-a\r\n250-b\r\n250 c\r\n");
}

TEST_CASE("tarpit: once a reply is out the client has limits.command_time_limit for its next command") {
    Stutter s(Millis(10), Millis(1000), 0);
    s.queue("250 ok\r\n", 0);
    const auto bytes = run(s, 0);
    const uint64_t last = bytes.back().first;
    CHECK(s.wake_at() == last + 1000);
    CHECK(s.tick(last + 999, false).step == Stutter::Step::Wait);
    SUBCASE("nothing comes: the limit") { CHECK(s.tick(last + 1000, false).step == Stutter::Step::TimeLimit); }
    SUBCASE("a command line starts: the limit starts over from its first byte") {
        s.line_started(last + 900);
        CHECK(s.tick(last + 1000, false).step == Stutter::Step::Wait);
        CHECK(s.wake_at() == last + 1900);
        CHECK(s.tick(last + 1900, false).step == Stutter::Step::TimeLimit);
    }
}

TEST_CASE("tarpit: the first reply's wait is not counted against the client") {
    // The greeting of a client that arrived long after the stutter was made.
    Stutter s(Millis(500), Millis(1000), 0);
    s.queue("220 x\r\n", 5000);
    CHECK(text_of(run(s, 5000)) == "220 x\r\n");
}

TEST_CASE("tarpit: lasting text is given out from where it is, any other reply from a copy of its own") {
    Stutter s(Millis(10), Millis(300000), 0);
    std::string greeting = "220 mx.example ESMTP\r\n";
    s.queue_lasting(greeting, 0);
    CHECK(s.tick(10, false).byte == '2');
    // The text is read where it is: the session keeps the configuration it points into.
    greeting[1] = '9';
    CHECK(s.tick(20, false).byte == '9');
    std::string reply = "250 ok\r\n";
    {
        Stutter t(Millis(10), Millis(300000), 0);
        t.queue(reply, 0);
        reply.assign(reply.size(), 'x');  // the caller's string changes or goes: the copy stays
        CHECK(text_of(run(t, 0)) == "250 ok\r\n");
    }
    // Queued behind lasting text, a reply follows what is left of it, in one copy.
    s.queue("250 next\r\n", 25);
    greeting.assign(greeting.size(), 'x');
    CHECK(text_of(run(s, 25)) == "0 mx.example ESMTP\r\n250 next\r\n");
    // Once out, lasting text is not read again, and nothing is left to give out.
    CHECK_FALSE(s.giving_out());
    s.queue_lasting(std::string_view(), 100);
    CHECK_FALSE(s.giving_out());
}

TEST_CASE("tarpit: close_when_done is kept until the session has given the last byte out") {
    Stutter s(Millis(10), Millis(1000), 0);
    s.queue("221 bye\r\n", 0);
    s.close_when_done();
    CHECK(s.closing());
    CHECK(s.giving_out());
    run(s, 0);
    CHECK(s.closing());
    CHECK_FALSE(s.giving_out());
}

TEST_CASE("tarpit: tarpit.max_connections slots, the next one refused until one is given back") {
    TarpitSlots slots;
    for (int i = 0; i < 3; ++i) CHECK(slots.take(3));
    CHECK(slots.in_use() == 3);
    CHECK_FALSE(slots.take(3));
    CHECK(slots.in_use() == 3);  // a refusal holds nothing
    slots.give_back();
    CHECK(slots.take(3));
    CHECK_FALSE(slots.take(3));
    // A reload that lowers the bound: no new client until enough have left.
    CHECK_FALSE(slots.take(2));
    slots.give_back();
    slots.give_back();
    CHECK(slots.take(2));
}

TEST_CASE("tarpit: the bound holds across loop threads taking and giving back at once") {
    TarpitSlots slots;
    constexpr int kMost = 50;
    std::atomic<int> held{0};
    std::atomic<int> most_seen{0};
    std::atomic<int> refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20000; ++i) {
                if (!slots.take(kMost)) {
                    refused.fetch_add(1);
                    continue;
                }
                const int now = held.fetch_add(1) + 1;
                for (int seen = most_seen.load(); now > seen && !most_seen.compare_exchange_weak(seen, now);) {
                }
                held.fetch_sub(1);
                slots.give_back();
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(most_seen.load() <= kMost);
    CHECK(slots.in_use() == 0);
}

TEST_CASE("tarpit: the keys, their defaults, and tarpit as the value of every *.action key") {
    TempDir dir("smtpscreen-tarpit");
    Config defaults;
    CHECK(defaults.tarpit_delay == Millis(1000));
    CHECK(defaults.tarpit_max_connections == 1000);

    std::vector<std::string> errors;
    auto c = load_config(dir.write("ok.ini",
                                   "[greet]\naction = tarpit\n[dnsbl]\naction = tarpit\n[deep]\naction = tarpit\n"
                                   "[access]\naction = tarpit\n[tarpit]\ndelay = 250ms\nmax_connections = 20\n"),
                         errors);
    REQUIRE(errors.empty());
    CHECK(c->greet_action == Action::Tarpit);
    CHECK(c->dnsbl_action == Action::Tarpit);
    CHECK(c->deep_action == Action::Tarpit);
    CHECK(c->access_action == Action::Tarpit);
    CHECK(c->tarpit_delay == Millis(250));
    CHECK(c->tarpit_max_connections == 20);
    const std::string printed = print_config(*c);
    CHECK(printed.find("[tarpit]\ndelay = 250ms\nmax_connections = 20\n") != std::string::npos);

    errors.clear();
    load_config(dir.write("bad.ini", "[tarpit]\ndelay = 0\nmax_connections = 0\n[greet]\naction = stutter\n"), errors);
    REQUIRE(errors.size() == 3);
    CHECK(errors[0].find(":2: tarpit.delay: ") != std::string::npos);
    CHECK(errors[1].find(":3: tarpit.max_connections: ") != std::string::npos);
    CHECK(errors[2].find("\"stutter\" is not an action (use ignore, enforce, drop or tarpit)") != std::string::npos);
}

TEST_CASE("tarpit: a deep test failed under deep.action = tarpit enforces, and STARTTLS is no longer offered") {
    DialogOptions o;
    o.mode = DialogMode::Deep;
    o.non_smtp = true;
    o.action = Action::Tarpit;
    o.hostname = "mx.example.net";
    o.client = "[192.0.2.1]:5678";
    o.tls_available = true;
    SmtpDialog d(o);
    auto events = d.feed("GET / HTTP/1.0\r\n");
    REQUIRE_FALSE(events.empty());
    CHECK(events[0].kind == DialogEvent::Kind::Violation);
    CHECK(d.enforcing());
    std::string replies;
    for (const auto& e : d.feed("EHLO bot.example\r\nSTARTTLS\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")) {
        if (e.kind == DialogEvent::Kind::Reply) replies += e.text;
        CHECK(e.kind != DialogEvent::Kind::StartTls);
        CHECK(e.kind != DialogEvent::Kind::Handoff);
    }
    CHECK(replies.find("STARTTLS") == std::string::npos);
    CHECK(replies.find("502 5.5.1 Error: command not implemented\r\n") != std::string::npos);
    CHECK(replies.find("550 5.5.1 Protocol error\r\n") != std::string::npos);
}
