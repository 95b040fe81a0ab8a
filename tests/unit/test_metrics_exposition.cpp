// proxy/metrics.h: the counters of the worker loops, summed at a scrape into
// Prometheus's text exposition format (version 0.0.4).
#include <doctest/doctest.h>

#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proxy/metrics.h"

using namespace smtpscreen;

namespace {

// "name{labels}" -> value, for every sample line; every # line is HELP or TYPE.
std::map<std::string, std::string> samples(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?) (\S+)$)");
    const std::regex meta(R"(^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram))$)");
    for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (line.rfind("#", 0) == 0) {
            CHECK_MESSAGE(std::regex_match(line, meta), line);
            continue;
        }
        REQUIRE_MESSAGE(std::regex_match(line, m, sample), line);
        CHECK_MESSAGE(out.emplace(m[1].str(), m[3].str()).second, "sample twice: " << line);
    }
    return out;
}

}  // namespace

TEST_CASE("metrics: a fresh process shows every family at zero, in the text format") {
    WorkerMetrics w;
    ProcessFigures p;
    p.resident_bytes = 12345678;
    p.open_fds = 9;
    const std::string text = format_metrics({&w}, p);
    CHECK(text.back() == '\n');
    auto s = samples(text);
    CHECK(s.at("smtpscreen_connections_total") == "0");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"handoff\"}") == "0");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"backend-refused\"}") == "0");
    CHECK(s.at("smtpscreen_sessions{phase=\"greet_wait\"}") == "0");
    CHECK(s.at("smtpscreen_test_failures_total{test=\"pregreet\"}") == "0");
    CHECK(s.at("smtpscreen_test_failures_total{test=\"access\"}") == "0");
    CHECK(s.at("smtpscreen_passes_total{kind=\"old\"}") == "0");
    CHECK(s.at("smtpscreen_cache_lookups_total{result=\"miss\"}") == "0");
    CHECK(s.at("smtpscreen_tls_handshakes_total{result=\"resumed\"}") == "0");
    CHECK(s.at("smtpscreen_backend_errors_total{kind=\"refused\"}") == "0");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"rate-limit\"}") == "0");
    CHECK(s.at("smtpscreen_rate_limited_total{scope=\"client\"}") == "0");
    CHECK(s.at("smtpscreen_rate_limited_total{scope=\"network\"}") == "0");
    CHECK(s.at("smtpscreen_rate_table_keys") == "0");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"banned\"}") == "0");
    CHECK(s.at("smtpscreen_bans_total") == "0");
    CHECK(s.at("smtpscreen_banned_connections_total") == "0");
    CHECK(s.at("smtpscreen_greylisted_total") == "0");
    CHECK(s.at("smtpscreen_greylist_passed_total") == "0");
    CHECK(s.at("smtpscreen_greylist_unanswered_total") == "0");
    CHECK(s.at("smtpscreen_greylist_triplets") == "0");
    // The greylist pass is cached like a test's, but greylisting fails no client.
    CHECK(s.count("smtpscreen_test_failures_total{test=\"greylist\"}") == 0);
    CHECK(s.at("process_resident_memory_bytes") == "12345678");
    CHECK(s.at("process_open_fds") == "9");
    CHECK(s.count("smtpscreen_build_info{version=\"" SMTPSCREEN_VERSION "\"}") == 1);
    // No zone asked yet: no DNSBL sample.
    for (const auto& [name, value] : s) CHECK(name.find("zone=") == std::string::npos);
}

TEST_CASE("metrics: the loops' counters are added up at a scrape") {
    WorkerMetrics a, b;
    a.connections.add(3);
    b.connections.add(4);
    a.session_ended("handoff");
    b.session_ended("handoff");
    b.session_ended("rejected");
    a.session_ended("something-new");  // an outcome the list does not name
    a.test_failures[static_cast<size_t>(Test::Pregreet)].add();
    b.test_failures[static_cast<size_t>(Test::BareNewline)].add(2);
    a.passes[static_cast<size_t>(Pass::New)].add();
    b.cache_lookups[static_cast<size_t>(CacheResult::Hit)].add();
    a.tls_handshakes[static_cast<size_t>(TlsResult::Resumed)].add();
    b.backend_refusals.add();
    a.session_ended("rate-limit");
    a.rate_limited[static_cast<size_t>(RateScope::Client)].add();
    b.rate_limited[static_cast<size_t>(RateScope::Network)].add(2);
    a.greylisted.add(3);
    b.greylisted.add();
    b.greylist_passed.add();
    a.greylist_unanswered.add(2);
    a.bans.add();
    b.bans.add();
    a.banned_connections.add(5);
    b.session_ended("banned");
    ProcessFigures figures;
    figures.greylist_triplets = 5;
    auto s = samples(format_metrics({&a, &b}, figures));
    CHECK(s.at("smtpscreen_connections_total") == "7");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"handoff\"}") == "2");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"rejected\"}") == "1");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"other\"}") == "1");
    CHECK(s.at("smtpscreen_test_failures_total{test=\"pregreet\"}") == "1");
    CHECK(s.at("smtpscreen_test_failures_total{test=\"bare_newline\"}") == "2");
    CHECK(s.at("smtpscreen_passes_total{kind=\"new\"}") == "1");
    CHECK(s.at("smtpscreen_cache_lookups_total{result=\"hit\"}") == "1");
    CHECK(s.at("smtpscreen_tls_handshakes_total{result=\"resumed\"}") == "1");
    CHECK(s.at("smtpscreen_backend_errors_total{kind=\"refused\"}") == "1");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"rate-limit\"}") == "1");
    CHECK(s.at("smtpscreen_rate_limited_total{scope=\"client\"}") == "1");
    CHECK(s.at("smtpscreen_rate_limited_total{scope=\"network\"}") == "2");
    CHECK(s.at("smtpscreen_bans_total") == "2");
    CHECK(s.at("smtpscreen_banned_connections_total") == "5");
    CHECK(s.at("smtpscreen_sessions_total{outcome=\"banned\"}") == "1");
    CHECK(s.at("smtpscreen_greylisted_total") == "4");
    CHECK(s.at("smtpscreen_greylist_passed_total") == "1");
    CHECK(s.at("smtpscreen_greylist_unanswered_total") == "2");
    CHECK(s.at("smtpscreen_greylist_triplets") == "5");
}

TEST_CASE("metrics: sessions by phase follow each session from step to step") {
    WorkerMetrics w;
    w.enter_phase(SessionPhase::Count, SessionPhase::ProxyHeader);
    w.enter_phase(SessionPhase::ProxyHeader, SessionPhase::GreetWait);
    w.enter_phase(SessionPhase::Count, SessionPhase::ProxyHeader);
    w.enter_phase(SessionPhase::ProxyHeader, SessionPhase::GreetWait);
    w.enter_phase(SessionPhase::GreetWait, SessionPhase::Relay);
    auto s = samples(format_metrics({&w}, ProcessFigures{}));
    CHECK(s.at("smtpscreen_sessions{phase=\"greet_wait\"}") == "1");
    CHECK(s.at("smtpscreen_sessions{phase=\"relay\"}") == "1");
    CHECK(s.at("smtpscreen_sessions{phase=\"proxy_header\"}") == "0");
    w.enter_phase(SessionPhase::Relay, SessionPhase::Count);  // DISCONNECT
    w.enter_phase(SessionPhase::GreetWait, SessionPhase::Count);
    s = samples(format_metrics({&w}, ProcessFigures{}));
    CHECK(s.at("smtpscreen_sessions{phase=\"greet_wait\"}") == "0");
    CHECK(s.at("smtpscreen_sessions{phase=\"relay\"}") == "0");
}

TEST_CASE("metrics: DNSBL lookups by zone and result, with a cumulative latency histogram") {
    WorkerMetrics a, b;
    a.dnsbl_answer("bl.test", DnsblReply::Status::Listed, 3);
    a.dnsbl_answer("bl.test", DnsblReply::Status::NotListed, 40);
    b.dnsbl_answer("bl.test", DnsblReply::Status::Failed, 10000);
    b.dnsbl_answer("wl.test", DnsblReply::Status::NotListed, 20000);
    auto s = samples(format_metrics({&a, &b}, ProcessFigures{}));
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"bl.test\",result=\"listed\"}") == "1");
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"bl.test\",result=\"not_listed\"}") == "1");
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"bl.test\",result=\"failed\"}") == "1");
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"wl.test\",result=\"not_listed\"}") == "1");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_bucket{zone=\"bl.test\",le=\"0.005\"}") == "1");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_bucket{zone=\"bl.test\",le=\"0.05\"}") == "2");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_bucket{zone=\"bl.test\",le=\"10\"}") == "3");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_bucket{zone=\"bl.test\",le=\"+Inf\"}") == "3");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_count{zone=\"bl.test\"}") == "3");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_sum{zone=\"bl.test\"}") == "10.043");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_bucket{zone=\"wl.test\",le=\"10\"}") == "0");
    CHECK(s.at("smtpscreen_dnsbl_query_duration_seconds_bucket{zone=\"wl.test\",le=\"+Inf\"}") == "1");
}

TEST_CASE("metrics: zones past the table's size are counted as other, and a label value is escaped") {
    WorkerMetrics w;
    for (size_t i = 0; i < WorkerMetrics::kMaxZones + 5; ++i) {
        w.dnsbl_answer("z" + std::to_string(i) + ".test", DnsblReply::Status::NotListed, 1);
    }
    w.dnsbl_answer("a\"b\\c.test", DnsblReply::Status::Listed, 1);
    auto s = samples(format_metrics({&w}, ProcessFigures{}));
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"z0.test\",result=\"not_listed\"}") == "1");
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"other\",result=\"not_listed\"}") == "5");
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"other\",result=\"listed\"}") == "1");
    WorkerMetrics x;
    x.dnsbl_answer("a\"b\\c.test", DnsblReply::Status::Listed, 1);
    auto t = samples(format_metrics({&x}, ProcessFigures{}));
    CHECK(t.at("smtpscreen_dnsbl_queries_total{zone=\"a\\\"b\\\\c.test\",result=\"listed\"}") == "1");
}

TEST_CASE("metrics: a scrape from another thread while a loop counts sees whole numbers that only grow") {
    WorkerMetrics w;
    std::thread loop([&w] {
        for (int i = 0; i < 200000; ++i) {
            w.connections.add();
            w.dnsbl_answer(i % 2 ? "bl.test" : "wl.test", DnsblReply::Status::NotListed, 1);
        }
    });
    uint64_t last = 0;
    for (int i = 0; i < 50; ++i) {
        auto s = samples(format_metrics({&w}, ProcessFigures{}));
        uint64_t now = std::stoull(s.at("smtpscreen_connections_total"));
        CHECK(now >= last);
        last = now;
    }
    loop.join();
    auto s = samples(format_metrics({&w}, ProcessFigures{}));
    CHECK(s.at("smtpscreen_connections_total") == "200000");
    CHECK(s.at("smtpscreen_dnsbl_queries_total{zone=\"bl.test\",result=\"not_listed\"}") == "100000");
}

TEST_CASE("metrics: the process figures come from /proc/self") {
    ProcessFigures p = read_process_figures();
    CHECK(p.resident_bytes > 0);
    CHECK(p.open_fds >= 3);
    CHECK(p.max_fds >= p.open_fds);
    CHECK(p.start_time_seconds > 1.6e9);
}
