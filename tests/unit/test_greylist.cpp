// greylist.*: the triplet, the rule of greylist_attempt, the bounded table and its
// sharing between loop threads (edge/greylist.h), its archive in the lmdb cache's file
// (cache/lmdb_cache.cpp), and the dialog's refusal of the RCPT that would have handed
// off (SmtpDialog::refuse_handoff).
#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <string>
#include <thread>
#include <vector>

#include "cache/lmdb_file_check.h"
#include "cache/lmdb_record.h"
#include "cache/verdict_cache.h"
#include "edge/greylist.h"
#include "fixtures.h"
#include "screen/replies.h"
#include "screen/smtp_dialog.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {

Endpoint ip(const char* text) { return *Endpoint::parse_ip(text); }

// delay 5m, retry window 2d, ttl 35d: postgrey's defaults and ours.
GreylistRules rules() { return GreylistRules{}; }

constexpr int64_t kMinute = 60000;
constexpr int64_t kDay = 86400000;
constexpr int64_t kStart = 1'700'000'000'000;  // a Unix time in ms

std::string triplet(const char* client, const char* from, const char* to) {
    return greylist_triplet(ip(client), NetworkPrefix{}, from, to);
}

}  // namespace

TEST_CASE("greylist triplet: the client's network, the addresses alone in lower case") {
    CHECK(triplet("192.0.2.77", "Sender@Example.ORG", "User@EXAMPLE.net") ==
          "192.0.2.0/24:sender@example.org:user@example.net");
    // postgrey normalises the case: a bot that varies it is the same triplet.
    CHECK(triplet("192.0.2.1", "a@B.example", "C@d.example") == triplet("192.0.2.200", "A@b.EXAMPLE", "c@D.example"));
    // A source route names relays, not the mailbox.
    CHECK(triplet("192.0.2.1", "@relay.example:a@b.example", "@x,@y:c@d.example") ==
          "192.0.2.0/24:a@b.example:c@d.example");
    // The null sender is its own sender.
    CHECK(triplet("192.0.2.1", "", "c@d.example") == "192.0.2.0/24::c@d.example");
    // IPv6 by its /64; another network is another triplet.
    CHECK(triplet("2001:db8:1:2:3:4:5:6", "a@b.example", "c@d.example") == "2001:db8:1:2::/64:a@b.example:c@d.example");
    CHECK(triplet("192.0.3.1", "a@b.example", "c@d.example") != triplet("192.0.2.1", "a@b.example", "c@d.example"));
    // limits.network_prefix decides what a network is.
    CHECK(greylist_triplet(ip("192.0.2.77"), NetworkPrefix{32, 128}, "a@b", "c@d") == "192.0.2.77/32:a@b:c@d");
    CHECK(greylist_address("MiXeD@Case.Example") == "mixed@case.example");
}

TEST_CASE("greylist rule: a new triplet is refused and starts the wait") {
    const GreylistStep step = greylist_attempt(std::nullopt, rules(), kStart);
    CHECK(step.outcome == GreylistOutcome::New);
    CHECK(greylist_refuses(step.outcome));
    CHECK(step.entry == GreylistEntry{kStart, false, kStart + 2 * kDay});
}

TEST_CASE("greylist rule: a retry before the delay is refused and does not restart the wait") {
    const GreylistEntry first = greylist_attempt(std::nullopt, rules(), kStart).entry;
    const GreylistStep early = greylist_attempt(first, rules(), kStart + 4 * kMinute);
    CHECK(early.outcome == GreylistOutcome::TooEarly);
    CHECK(greylist_refuses(early.outcome));
    CHECK(early.entry == first);
    // One millisecond short of the delay is still too early; the delay itself passes.
    CHECK(greylist_attempt(early.entry, rules(), kStart + 5 * kMinute - 1).outcome == GreylistOutcome::TooEarly);
    CHECK(greylist_attempt(early.entry, rules(), kStart + 5 * kMinute).outcome == GreylistOutcome::Retried);
}

TEST_CASE("greylist rule: a retry within the window passes; the triplet is then kept for the ttl") {
    const GreylistEntry first = greylist_attempt(std::nullopt, rules(), kStart).entry;
    const int64_t retry = kStart + 1 * kDay;
    const GreylistStep passed = greylist_attempt(first, rules(), retry);
    CHECK(passed.outcome == GreylistOutcome::Retried);
    CHECK_FALSE(greylist_refuses(passed.outcome));
    CHECK(passed.entry == GreylistEntry{kStart, true, retry + 35 * kDay});
    // Used again later: known, and kept for another ttl from then.
    const GreylistStep again = greylist_attempt(passed.entry, rules(), retry + 30 * kDay);
    CHECK(again.outcome == GreylistOutcome::Known);
    CHECK(again.entry.expires_ms == retry + 65 * kDay);
    // Unused for longer than the ttl: new again.
    CHECK(greylist_attempt(passed.entry, rules(), retry + 35 * kDay).outcome == GreylistOutcome::New);
}

TEST_CASE("greylist rule: a retry after the window is a new first attempt") {
    const GreylistEntry first = greylist_attempt(std::nullopt, rules(), kStart).entry;
    const int64_t late = kStart + 2 * kDay;
    const GreylistStep step = greylist_attempt(first, rules(), late);
    CHECK(step.outcome == GreylistOutcome::New);
    CHECK(step.entry == GreylistEntry{late, false, late + 2 * kDay});
    // And that new wait is the one that counts.
    CHECK(greylist_attempt(step.entry, rules(), late + kMinute).outcome == GreylistOutcome::TooEarly);
    CHECK(greylist_attempt(step.entry, rules(), late + 5 * kMinute).outcome == GreylistOutcome::Retried);
}

TEST_CASE("greylist rule: greylist.delay = 0 lets the first retry through") {
    GreylistRules r = rules();
    r.delay = Millis(0);
    const GreylistEntry first = greylist_attempt(std::nullopt, r, kStart).entry;
    CHECK(greylist_attempt(first, r, kStart).outcome == GreylistOutcome::Retried);
}

TEST_CASE("greylist table: the whole life of a triplet, keyed by the normalised triplet") {
    GreylistTable table(100);
    const std::string key = triplet("192.0.2.1", "a@b.example", "c@d.example");
    CHECK(table.attempt(key, rules(), kStart).outcome == GreylistOutcome::New);
    CHECK(table.attempt(key, rules(), kStart + kMinute).outcome == GreylistOutcome::TooEarly);
    // The retry comes from another address of the pool, with the case changed.
    const std::string retry = triplet("192.0.2.9", "A@B.example", "C@D.EXAMPLE");
    CHECK(table.attempt(retry, rules(), kStart + 6 * kMinute).outcome == GreylistOutcome::Retried);
    CHECK(table.attempt(key, rules(), kStart + 7 * kMinute).outcome == GreylistOutcome::Known);
    CHECK(table.size() == 1);
    // Another recipient is another triplet.
    CHECK(table.attempt(triplet("192.0.2.1", "a@b.example", "e@d.example"), rules(), kStart + 8 * kMinute).outcome ==
          GreylistOutcome::New);
    CHECK(table.size() == 2);
}

TEST_CASE("greylist table: never more than its size; the least recently used triplet goes first") {
    GreylistTable table(3);
    const std::string a = triplet("192.0.2.1", "a@x", "r@y"), b = triplet("192.0.2.1", "b@x", "r@y"),
                      c = triplet("192.0.2.1", "c@x", "r@y"), d = triplet("192.0.2.1", "d@x", "r@y");
    table.attempt(a, rules(), kStart);
    table.attempt(b, rules(), kStart + 1);
    table.attempt(c, rules(), kStart + 2);
    table.attempt(a, rules(), kStart + 3);  // a is used again: b is now the oldest
    table.attempt(d, rules(), kStart + 4);
    CHECK(table.size() == 3);
    CHECK(table.contains(a));
    CHECK_FALSE(table.contains(b));
    CHECK(table.contains(c));
    CHECK(table.contains(d));
    // A forgotten triplet starts over (the worst that eviction does: one more wait).
    CHECK(table.attempt(b, rules(), kStart + 6 * kMinute).outcome == GreylistOutcome::New);
    CHECK(table.size() == 3);

    // A flood of distinct senders keeps it at its size.
    GreylistTable flood(1000);
    for (int i = 0; i < 50000; ++i) {
        flood.attempt(triplet("198.51.100.7", ("bot" + std::to_string(i) + "@x.example").c_str(), "r@y"), rules(),
                      kStart + i);
        REQUIRE(flood.size() <= 1000);
    }
    CHECK(flood.size() == 1000);
    // A smaller size at a reload forgets the oldest beyond it at once.
    flood.set_capacity(10);
    CHECK(flood.size() == 10);
    CHECK(flood.contains(triplet("198.51.100.7", "bot49999@x.example", "r@y")));
    CHECK_FALSE(flood.contains(triplet("198.51.100.7", "bot49989@x.example", "r@y")));
}

TEST_CASE("greylist shared table: every loop thread sees the same triplets, within the size") {
    SharedGreylistTable shared;
    CHECK(shared.entries_in_memory() == 0);  // no table before the first attempt
    GreylistRules r = rules();
    r.table_size = 500;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&shared, r, t] {
            for (int i = 0; i < 2000; ++i) {
                shared.attempt(triplet("203.0.113.5", ("s" + std::to_string(t * 2000 + i) + "@x").c_str(), "r@y"), r,
                               kStart, [](GreylistOutcome) {});
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(shared.entries_in_memory() == 500);
    const std::string key = triplet("203.0.113.5", "one@x", "r@y");
    GreylistOutcome got = GreylistOutcome::Known;
    shared.attempt(key, r, kStart, [&got](GreylistOutcome o) { got = o; });
    CHECK(got == GreylistOutcome::New);
    std::thread other([&] { got = shared.attempt_now(key, r, kStart + 10 * kMinute).outcome; });
    other.join();
    CHECK(got == GreylistOutcome::Retried);
}

TEST_CASE("greylisted RCPT: 450 and the GREYLISTED line; the dialog goes on with the transaction open") {
    DialogOptions o;
    o.pipelining = o.non_smtp = o.bare_newline = true;
    o.hostname = "mx.example.net";
    o.client = "[192.0.2.1]:5678";
    SmtpDialog d(o);
    d.feed("EHLO client.example.org\r\n");
    d.feed("MAIL FROM:<Sender@Example.org>\r\n");
    auto events = d.feed("RCPT TO:<@relay.example:user@example.net>\r\n");
    REQUIRE(events.size() == 1);
    REQUIRE(events[0].kind == DialogEvent::Kind::Handoff);
    CHECK(d.finished());

    events = d.refuse_handoff(replies::kGreylisted);
    REQUIRE(events.size() == 2);
    CHECK(events[0].kind == DialogEvent::Kind::Log);
    // The addresses as the client wrote them (postscreen's NOQUEUE line does the same).
    CHECK(events[0].text == "GREYLISTED [192.0.2.1]:5678: from=<Sender@Example.org>, to=<user@example.net>");
    CHECK(events[1].kind == DialogEvent::Kind::Reply);
    CHECK(events[1].text == "450 4.2.0 Greylisted, try again later\r\n");
    CHECK_FALSE(d.finished());
    CHECK(d.passed());  // greylisting is no failed test

    // Only a handoff can be refused.
    CHECK(d.refuse_handoff(replies::kGreylisted).empty());

    // Still in the transaction: another RCPT hands off with the same MAIL, and DATA
    // without one says there is no valid recipient.
    events = d.feed("DATA\r\n");
    REQUIRE(events.size() == 1);
    CHECK(events[0].text == "554 5.5.1 Error: no valid recipients\r\n");
    events = d.feed("RCPT TO:<other@example.net>\r\n");
    REQUIRE(events.size() == 1);
    REQUIRE(events[0].kind == DialogEvent::Kind::Handoff);
    CHECK(events[0].tx.mail_line == "MAIL FROM:<Sender@Example.org>");
    CHECK(events[0].tx.rcpt_line == "RCPT TO:<other@example.net>");
    d.refuse_handoff(replies::kGreylisted);
    events = d.feed("QUIT\r\n");
    REQUIRE(events.size() == 2);
    CHECK(events[1].kind == DialogEvent::Kind::Close);
    CHECK(events[1].text == "quit");
}

TEST_CASE("greylisted RCPT: what the client sent behind the RCPT is handled after the refusal") {
    DialogOptions o;  // no pipelining test: the client pipelines legitimately here
    o.hostname = "mx.example.net";
    o.client = "[192.0.2.1]:5678";
    SmtpDialog d(o);
    d.feed("HELO client.example.org\r\nMAIL FROM:<a@b.example>\r\n");
    auto events = d.feed("RCPT TO:<c@d.example>\r\nQUIT\r\n");
    REQUIRE(events.size() == 1);
    CHECK(events[0].kind == DialogEvent::Kind::Handoff);
    d.refuse_handoff(replies::kGreylisted);
    events = d.feed({});
    REQUIRE(events.size() == 2);
    CHECK(events[0].text == "221 2.0.0 mx.example.net Bye\r\n");
    CHECK(events[1].kind == DialogEvent::Kind::Close);
}

TEST_CASE("greylist in the lmdb cache: triplets survive a restart, beside the clients, never more than the table") {
    TempDir dir("smtpscreen-greylist");
    const std::string path = dir.path("smtpscreen.cache");
    Logger log(false, "smtpscreen-test", false);
    GreylistRules r = rules();
    r.table_size = 3;
    const std::string a = triplet("192.0.2.1", "a@x", "r@y"), b = triplet("192.0.2.1", "b@x", "r@y"),
                      c = triplet("192.0.2.1", "c@x", "r@y"), d = triplet("192.0.2.1", "d@x", "r@y");
    // Past LMDB's 511-byte keys: kept in memory only.
    const std::string long_one = triplet("192.0.2.1", (std::string(300, 's') + "@x").c_str(), (std::string(300, 'r') + "@y").c_str());
    {
        auto cache = open_lmdb_cache(path, log);
        TestResults client;
        client[Test::Pregreet] = 4'000'000'000;
        cache->store("192.0.2.1", client);
        REQUIRE(cache->greylist_archive());
        SharedGreylistTable table(cache->greylist_archive());
        CHECK(table.attempt_now(a, r, kStart).outcome == GreylistOutcome::New);
        CHECK(table.attempt_now(b, r, kStart + 1).outcome == GreylistOutcome::New);
        CHECK(table.attempt_now(a, r, kStart + 6 * kMinute).outcome == GreylistOutcome::Retried);
        CHECK(table.attempt_now(c, r, kStart + 6 * kMinute + 1).outcome == GreylistOutcome::New);
        CHECK(table.attempt_now(d, r, kStart + 6 * kMinute + 2).outcome == GreylistOutcome::New);  // b goes
        CHECK(table.attempt_now(long_one, r, kStart + 6 * kMinute + 3).outcome == GreylistOutcome::New);  // a goes
        CHECK(table.entries_in_memory() == 3);
        // The cache tools see clients, not triplets.
        std::vector<std::string> clients;
        cache->for_each([&](const std::string& ip, const TestResults&) { clients.push_back(ip); });
        CHECK(clients == std::vector<std::string>{"192.0.2.1"});
    }
    // The file with triplets in it passes the check at open.
    const LmdbFileCheck checked = check_lmdb_file(path);
    CHECK(checked.verdict == LmdbFileCheck::Verdict::Usable);
    CHECK(checked.records == 3);  // the client, c and d
    {
        auto cache = open_lmdb_cache(path, log);
        std::vector<std::string> stored;
        cache->greylist_archive()->load_triplets(
            [&](const std::string& t, const GreylistEntry&) { stored.push_back(t); });
        CHECK(stored == std::vector<std::string>{c, d});
        SharedGreylistTable table(cache->greylist_archive());
        // c's wait went on across the restart: its retry after the delay passes.
        CHECK(table.attempt_now(c, r, kStart + 12 * kMinute).outcome == GreylistOutcome::Retried);
        CHECK(table.entries_in_memory() == 2);
        CHECK(table.attempt_now(b, r, kStart + 12 * kMinute).outcome == GreylistOutcome::New);  // forgotten
        // A smaller table at a reload forgets its oldest in the file too.
        r.table_size = 1;
        CHECK(table.attempt_now(b, r, kStart + 13 * kMinute).outcome == GreylistOutcome::TooEarly);
        stored.clear();
        cache->greylist_archive()->load_triplets(
            [&](const std::string& t, const GreylistEntry&) { stored.push_back(t); });
        CHECK(stored == std::vector<std::string>{b});
        // The cleanup drops a triplet that lapsed (its retry window is over) and keeps the client.
        VerdictCache::Cleanup cleanup;
        while (!cleanup.done) cache->cleanup_step((kStart + 3 * kDay) / 1000, 100, cleanup);
        CHECK(cleanup.dropped == 1);
        CHECK(cleanup.retained == 1);
    }
    CHECK(open_memory_cache()->greylist_archive() == nullptr);
}
