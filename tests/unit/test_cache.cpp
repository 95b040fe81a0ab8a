#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cache/verdict_cache.h"

using namespace smtpscreen;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with its contents at scope end.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "smtpscreen-cache-XXXXXX").string();
        REQUIRE(mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::permissions(path, fs::perms::owner_all, ec);
        fs::remove_all(path, ec);
    }
};

std::optional<TestResults> lookup(VerdictCache& cache, const std::string& ip) {
    std::optional<TestResults> got;
    bool called = false;
    cache.lookup(ip, [&](std::optional<TestResults> r) {
        called = true;
        got = r;
    });
    REQUIRE(called);  // embedded backends answer inline
    return got;
}

TestResults results(int64_t pregreet, int64_t dnsbl) {
    TestResults r;
    r[Test::Pregreet] = pregreet;
    r[Test::Dnsbl] = dnsbl;
    return r;
}

}  // namespace

TEST_CASE("test_name gives the names used in logs") {
    CHECK(test_name(Test::Pregreet) == "pregreet");
    CHECK(test_name(Test::Dnsbl) == "dnsbl");
    CHECK(test_name(Test::Pipelining) == "pipelining");
    CHECK(test_name(Test::NonSmtp) == "non_smtp");
    CHECK(test_name(Test::BareNewline) == "bare_newline");
}

TEST_CASE("lmdb cache: store, lookup, and the records survive a reopen") {
    TempDir dir;
    const std::string path = (dir.path / "smtpscreen.cache").string();
    Logger log(false, "smtpscreen-test", false);
    const int64_t later = 4'000'000'000;
    {
        auto cache = open_lmdb_cache(path, log);
        CHECK_FALSE(lookup(*cache, "192.0.2.1"));
        TestResults all;
        for (size_t t = 0; t < kTestCount; ++t) all.pass_until[t] = later + static_cast<int64_t>(t);
        cache->store("192.0.2.1", all);
        cache->store("2001:db8::1", results(later, 0));
        const auto got = lookup(*cache, "192.0.2.1");
        REQUIRE(got);
        CHECK(got->pass_until == all.pass_until);
        // Overwrite.
        cache->store("192.0.2.1", results(7, 8));
        CHECK(lookup(*cache, "192.0.2.1")->pass_until == results(7, 8).pass_until);
    }
    CHECK(fs::exists(path));
    CHECK(fs::exists(path + "-lock"));
    {
        auto cache = open_lmdb_cache(path, log);
        const auto v4 = lookup(*cache, "192.0.2.1");
        REQUIRE(v4);
        CHECK(v4->pass_until == results(7, 8).pass_until);
        const auto v6 = lookup(*cache, "2001:db8::1");
        REQUIRE(v6);
        CHECK(v6->passed(Test::Pregreet, later - 1));
        CHECK_FALSE(v6->passed(Test::Dnsbl, 0));
        CHECK_FALSE(lookup(*cache, "192.0.2.2"));
    }
}

TEST_CASE("lmdb cache: purge_expired removes only records with nothing left") {
    TempDir dir;
    Logger log(false, "smtpscreen-test", false);
    auto cache = open_lmdb_cache((dir.path / "c").string(), log);
    cache->store("192.0.2.1", results(100, 50));
    cache->store("192.0.2.2", results(100, 300));
    cache->store("192.0.2.3", results(0, 0));
    // Expired records are still returned until purged: the session judges expiry.
    CHECK(lookup(*cache, "192.0.2.1"));
    CHECK(cache->purge_expired(200) == 2);
    CHECK_FALSE(lookup(*cache, "192.0.2.1"));
    CHECK(lookup(*cache, "192.0.2.2"));
    CHECK_FALSE(lookup(*cache, "192.0.2.3"));
    CHECK(cache->purge_expired(200) == 0);
}

TEST_CASE("lmdb cache: loop threads share one environment") {
    TempDir dir;
    Logger log(false, "smtpscreen-test", false);
    auto cache = open_lmdb_cache((dir.path / "c").string(), log);
    std::vector<std::thread> threads;
    std::atomic<int> lost{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&cache, &lost, t] {
            for (int i = 0; i < 200; ++i) {
                const std::string ip = "10.0." + std::to_string(t) + "." + std::to_string(i);
                cache->store(ip, results(1000 + i, 0));
                bool ok = false;
                cache->lookup(ip, [&](std::optional<TestResults> r) { ok = r && r->pass_until[0] == 1000 + i; });
                if (!ok) ++lost;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(lost == 0);
    CHECK(lookup(*cache, "10.0.3.199"));
}

TEST_CASE("lmdb cache: errors name the file and say what to do") {
    TempDir dir;
    Logger log(false, "smtpscreen-test", false);
    SUBCASE("missing directory") {
        const std::string path = (dir.path / "no-such-dir" / "c").string();
        try {
            open_lmdb_cache(path, log);
            FAIL("expected an exception");
        } catch (const std::runtime_error& e) {
            const std::string what = e.what();
            CHECK(what.find(path) != std::string::npos);
            CHECK(what.find("does not exist") != std::string::npos);
        }
    }
    SUBCASE("not an LMDB file") {
        const std::string path = (dir.path / "junk").string();
        {
            std::FILE* f = std::fopen(path.c_str(), "w");
            REQUIRE(f);
            for (int i = 0; i < 1000; ++i) std::fputs("this is not lmdb\n", f);
            std::fclose(f);
        }
        try {
            open_lmdb_cache(path, log);
            FAIL("expected an exception");
        } catch (const std::runtime_error& e) {
            const std::string what = e.what();
            CHECK(what.find(path) != std::string::npos);
            CHECK(what.find("cache.path") != std::string::npos);
        }
    }
    SUBCASE("directory not writable") {
        if (geteuid() == 0) return;  // root ignores the permission bits
        fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
        const std::string path = (dir.path / "c").string();
        try {
            open_lmdb_cache(path, log);
            FAIL("expected an exception");
        } catch (const std::runtime_error& e) {
            const std::string what = e.what();
            CHECK(what.find(path) != std::string::npos);
            CHECK(what.find("writable") != std::string::npos);
        }
    }
}

TEST_CASE("memory cache: store, lookup, overwrite") {
    auto cache = open_memory_cache();
    const int64_t later = 4'000'000'000;
    CHECK_FALSE(lookup(*cache, "192.0.2.1"));
    cache->store("192.0.2.1", results(later, 0));
    auto got = lookup(*cache, "192.0.2.1");
    REQUIRE(got);
    CHECK(got->passed(Test::Pregreet, later - 1));
    cache->store("192.0.2.1", results(later, later));
    CHECK(lookup(*cache, "192.0.2.1")->passed(Test::Dnsbl, later - 1));
}

TEST_CASE("memory cache: a lookup may store from its callback") {
    auto cache = open_memory_cache();
    cache->lookup("192.0.2.9", [&](std::optional<TestResults> r) {
        CHECK_FALSE(r);
        cache->store("192.0.2.9", results(4'000'000'000, 0));
    });
    CHECK(lookup(*cache, "192.0.2.9"));
}

TEST_CASE("memory cache: bounded, dropping expired records first, then the oldest") {
    const int64_t later = 4'000'000'000;
    auto cache = open_memory_cache(100);
    cache->store("expired", results(1, 1));
    for (int i = 0; i < 99; ++i) cache->store("ip" + std::to_string(i), results(later, 0));
    // Full: the next store drops the expired record and then the oldest live ones.
    cache->store("new", results(later, 0));
    CHECK(lookup(*cache, "new"));
    CHECK_FALSE(lookup(*cache, "expired"));
    CHECK(lookup(*cache, "ip98"));
    // Fill far beyond the bound; the newest stay.
    for (int i = 0; i < 1000; ++i) cache->store("more" + std::to_string(i), results(later, 0));
    CHECK(lookup(*cache, "more999"));
    CHECK_FALSE(lookup(*cache, "more0"));
    int present = 0;
    for (int i = 0; i < 1000; ++i) present += lookup(*cache, "more" + std::to_string(i)) ? 1 : 0;
    CHECK(present <= 100);
    CHECK(present >= 90);
}

TEST_CASE("memory cache: purge_expired") {
    auto cache = open_memory_cache();
    cache->store("a", results(100, 50));
    cache->store("b", results(100, 300));
    CHECK(cache->purge_expired(200) == 1);
    CHECK(cache->purge_expired(200) == 0);
}
