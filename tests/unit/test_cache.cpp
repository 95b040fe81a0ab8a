#include <doctest/doctest.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cache/lmdb_file_check.h"
#include "cache/lmdb_record.h"
#include "cache/verdict_cache.h"
#include "fixtures.h"

using namespace smtpscreen;
using namespace smtpscreen::test;
namespace fs = std::filesystem;

namespace {

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

// The whole file, and the same bytes written back.
std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A cache file as smtpscreen leaves it: `n` clients stored, the environment closed.
void write_cache(const std::string& path, int n, Logger& log) {
    auto cache = open_lmdb_cache(path, log);
    for (int i = 0; i < n; ++i) {
        cache->store("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250), results(4'000'000'000, i));
    }
}

bool corrupt(const LmdbFileCheck& c) { return c.verdict == LmdbFileCheck::Verdict::Corrupt; }

std::vector<fs::path> moved_aside(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().filename().string().find(".corrupt-") != std::string::npos) out.push_back(e.path());
    }
    return out;
}

}  // namespace

TEST_CASE("test_name gives the names used in logs") {
    CHECK(test_name(Test::Pregreet) == "pregreet");
    CHECK(test_name(Test::Dnsbl) == "dnsbl");
    CHECK(test_name(Test::Pipelining) == "pipelining");
    CHECK(test_name(Test::NonSmtp) == "non_smtp");
    CHECK(test_name(Test::BareNewline) == "bare_newline");
    CHECK(test_name(Test::Greylist) == "greylist");
}

TEST_CASE("lmdb cache: store, lookup, and the records survive a reopen") {
    TempDir dir("smtpscreen-cache");
    const std::string path = dir.path("smtpscreen.cache");
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

TEST_CASE("lmdb cache: the cache tools list, erase and empty it; a second handle sees the first's records") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    const std::string path = dir.path("c");
    auto daemon = open_lmdb_cache(path, log);
    daemon->store("192.0.2.2", results(100, 0));
    daemon->store("192.0.2.1", results(100, 50));
    daemon->store("2001:db8::1", results(300, 0));
    std::vector<std::string> keys;
    daemon->for_each([&](const std::string& ip, const TestResults& r) {
        keys.push_back(ip);
        CHECK(r[Test::Pregreet] > 0);
    });
    CHECK(keys == std::vector<std::string>{"192.0.2.1", "192.0.2.2", "2001:db8::1"});
    CHECK(daemon->erase("192.0.2.1"));
    CHECK_FALSE(daemon->erase("192.0.2.1"));
    CHECK_FALSE(lookup(*daemon, "192.0.2.1"));
    CHECK(lookup(*daemon, "192.0.2.2"));
    CHECK(daemon->erase_all() == 2);
    CHECK_FALSE(lookup(*daemon, "192.0.2.2"));
    daemon->store("192.0.2.9", results(100, 0));  // the database is still usable after the flush
    CHECK(lookup(*daemon, "192.0.2.9"));
}

TEST_CASE("lmdb cache: a full cleanup in bounded steps drops the expired records and counts both") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    auto cache = open_lmdb_cache(dir.path("c"), log);
    for (int i = 0; i < 25; ++i) cache->store("10.0.0." + std::to_string(i), results(i % 5 == 0 ? 300 : 100, 0));
    VerdictCache::Cleanup cleanup;
    int steps = 0;
    while (!cleanup.done && steps < 100) {
        cache->cleanup_step(200, 4, cleanup);
        ++steps;
    }
    CHECK(cleanup.dropped == 20);
    CHECK(cleanup.retained == 5);
    CHECK(steps == 7);  // 25 records, 4 at a time
    CHECK(lookup(*cache, "10.0.0.5"));
    CHECK_FALSE(lookup(*cache, "10.0.0.6"));
}

TEST_CASE("memory cache: not editable from another process") {
    auto cache = open_memory_cache();
    CHECK_THROWS_AS(cache->erase("192.0.2.1"), std::runtime_error);
}

TEST_CASE("lmdb cache: purge_expired removes only records with nothing left") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    auto cache = open_lmdb_cache(dir.path("c"), log);
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
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    auto cache = open_lmdb_cache(dir.path("c"), log);
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
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    SUBCASE("missing directory") {
        // The last directory of cache.path is created; the ones above it must exist.
        const std::string path = dir.path("no-such-dir/sub/c");
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
        const std::string path = dir.path("junk");
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
        fs::permissions(dir.dir(), fs::perms::owner_read | fs::perms::owner_exec);
        const std::string path = dir.path("c");
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

// ------------------------------------------------------------------ corrupt and truncated files

TEST_CASE("lmdb file check: files smtpscreen writes pass, also after churn") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    const std::string path = dir.path("c");
    CHECK(check_lmdb_file(path).verdict == LmdbFileCheck::Verdict::Usable);  // absent: a new cache
    spit(path, "");
    CHECK(check_lmdb_file(path).verdict == LmdbFileCheck::Verdict::Usable);  // empty: LMDB initialises it
    fs::remove(path);
    write_cache(path, 3, log);
    auto c = check_lmdb_file(path);
    CHECK(c.verdict == LmdbFileCheck::Verdict::Usable);
    CHECK(c.problem == "");
    CHECK(c.records == 3);
    // Pages freed and reused by the cache's own stores and purges.
    {
        auto cache = open_lmdb_cache(path, log);
        for (int round = 0; round < 4; ++round) {
            for (int i = 0; i < 3000; ++i) {
                const int64_t until = (i + round) % 3 == 0 ? 4'000'000'000 : 100 + round;
                cache->store("10.2." + std::to_string(i / 250) + "." + std::to_string(i % 250), results(until, 0));
            }
            cache->purge_expired(1000);
        }
    }
    c = check_lmdb_file(path);
    CHECK(c.verdict == LmdbFileCheck::Verdict::Usable);
    CHECK(c.problem == "");
    CHECK(c.records == 1000 + 3);
    // A deep tree, and a free list whose entries need overflow pages: thousands of
    // pages freed in one transaction (written through LMDB directly, for speed).
    {
        MDB_env* env = nullptr;
        REQUIRE(mdb_env_create(&env) == 0);
        REQUIRE(mdb_env_set_mapsize(env, kLmdbMapSize) == 0);
        REQUIRE(mdb_env_open(env, path.c_str(), MDB_NOSUBDIR | MDB_NOSYNC, 0600) == 0);
        const std::string record = encode_lmdb_record(results(4'000'000'000, 0));
        for (int pass = 0; pass < 2; ++pass) {
            MDB_txn* txn = nullptr;
            MDB_dbi dbi = 0;
            REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
            REQUIRE(mdb_dbi_open(txn, nullptr, 0, &dbi) == 0);
            int failed = 0;
            for (int i = 0; i < 60000; ++i) {
                std::string k = "10.3." + std::to_string(i / 250) + "." + std::to_string(i % 250);
                MDB_val key{k.size(), k.data()}, val{record.size(), const_cast<char*>(record.data())};
                if (pass == 0) failed += mdb_put(txn, dbi, &key, &val, 0) != 0;
                if (pass == 1 && i % 4 != 0) failed += mdb_del(txn, dbi, &key, nullptr) != 0;
            }
            REQUIRE(failed == 0);
            REQUIRE(mdb_txn_commit(txn) == 0);
        }
        MDB_txn* txn = nullptr;
        MDB_stat free_list{};
        REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
        REQUIRE(mdb_stat(txn, 0, &free_list) == 0);
        mdb_txn_abort(txn);
        mdb_env_close(env);
        CHECK(free_list.ms_overflow_pages > 0);  // the case this part is for
    }
    c = check_lmdb_file(path);
    CHECK(c.verdict == LmdbFileCheck::Verdict::Usable);
    CHECK(c.problem == "");
    CHECK(c.records == 1000 + 3 + 15000);
}

TEST_CASE("lmdb file check: crafted damage is found without touching a page past the end") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    const std::string path = dir.path("c");
    write_cache(path, 2000, log);
    const std::string good = slurp(path);
    const size_t psize = 4096;
    REQUIRE(good.size() >= 8 * psize);
    REQUIRE(check_lmdb_file(path).verdict == LmdbFileCheck::Verdict::Usable);

    SUBCASE("truncated to half") {
        spit(path, good.substr(0, good.size() / 2));
        const auto c = check_lmdb_file(path);
        CHECK(corrupt(c));
        CHECK(c.problem.find("truncated") != std::string::npos);
    }
    SUBCASE("truncated to its meta pages") {
        spit(path, good.substr(0, 2 * psize));
        CHECK(corrupt(check_lmdb_file(path)));
    }
    SUBCASE("truncated inside meta page 1") {
        spit(path, good.substr(0, psize + 20));
        CHECK(corrupt(check_lmdb_file(path)));
    }
    SUBCASE("truncated inside meta page 0") {
        spit(path, good.substr(0, 100));
        CHECK(corrupt(check_lmdb_file(path)));
    }
    SUBCASE("garbage over each page in turn") {
        // A page the trees use is found damaged; a free page may hold anything, and
        // then every client is still there.
        uint32_t x = 12345;
        size_t damaged = 0;
        for (size_t page = 2; page < good.size() / psize; ++page) {
            std::string bad = good;
            for (size_t i = 0; i < psize; ++i) {
                x = x * 1103515245 + 12345;
                bad[page * psize + i] = static_cast<char>(x >> 16);
            }
            spit(path, bad);
            if (corrupt(check_lmdb_file(path))) {
                ++damaged;
                continue;
            }
            auto cache = open_lmdb_cache(path, log);
            int found = 0;
            for (int i = 0; i < 2000; ++i) {
                found += lookup(*cache, "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250)) ? 1 : 0;
            }
            CHECK(found == 2000);
            CHECK(moved_aside(dir.dir()).empty());
        }
        CHECK(damaged >= 2000 / 100);  // at least the leaves, ~60 clients a page
    }
    SUBCASE("a meta page's magic or data version") {
        std::string bad = good;
        bad[psize + 16] ^= 0x55;  // meta page 1, mm_magic
        spit(path, bad);
        CHECK(corrupt(check_lmdb_file(path)));
        bad = good;
        bad[16 + 4] = 2;  // meta page 0, mm_version
        spit(path, bad);
        const auto c = check_lmdb_file(path);
        CHECK(corrupt(c));
        CHECK(c.problem.find("version") != std::string::npos);
    }
    SUBCASE("a record that does not decode") {
        std::string bad = good;
        // The key of the first client, then its node's data: the record's version byte.
        const std::string key = "10.1.0.0";
        const size_t at = bad.find(key);
        REQUIRE(at != std::string::npos);
        REQUIRE(bad[at + key.size()] == 1);
        bad[at + key.size()] = 9;
        spit(path, bad);
        const auto c = check_lmdb_file(path);
        CHECK(corrupt(c));
        CHECK(c.problem.find("does not decode") != std::string::npos);
    }
    SUBCASE("a page number in a branch page") {
        std::string bad = good;
        // The records' root is a branch page with 2000 clients; point its second child
        // past the end of the file.
        const size_t meta1 = psize;
        const size_t m = (good[meta1 + 16 + 128] > good[16 + 128]) ? meta1 : 0;  // newest txnid (low byte)
        uint64_t root = 0;
        std::memcpy(&root, good.data() + m + 16 + 72 + 40, 8);
        REQUIRE(root < good.size() / psize);
        const char* page = good.data() + root * psize;
        uint16_t flags = 0, ptr1 = 0;
        std::memcpy(&flags, page + 10, 2);
        REQUIRE((flags & 1) == 1);  // a branch page
        std::memcpy(&ptr1, page + 16 + 2, 2);
        const uint16_t far = 0x7fff;
        std::memcpy(bad.data() + root * psize + ptr1, &far, 2);
        spit(path, bad);
        const auto c = check_lmdb_file(path);
        CHECK(corrupt(c));
    }
    SUBCASE("zeros where the meta pages were") {
        std::string bad = good;
        std::fill(bad.begin(), bad.begin() + static_cast<std::ptrdiff_t>(2 * psize), '\0');
        spit(path, bad);
        CHECK(corrupt(check_lmdb_file(path)));
    }
    SUBCASE("another program's file is not ours to move") {
        spit(path, std::string(3 * psize, 'x'));
        CHECK(check_lmdb_file(path).verdict == LmdbFileCheck::Verdict::Foreign);
    }
}

TEST_CASE("lmdb cache: a corrupt file is moved aside and the cache starts empty") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    const std::string path = dir.path("c");
    write_cache(path, 2000, log);
    const std::string good = slurp(path);
    SUBCASE("truncated") { spit(path, good.substr(0, good.size() / 2)); }
    SUBCASE("a damaged page") {
        std::string bad = good;
        for (size_t i = 2 * 4096; i < bad.size(); i += 4096) std::memset(bad.data() + i + 8, 0xA5, 64);
        spit(path, bad);
    }
    auto cache = open_lmdb_cache(path, log);  // a SIGBUS here without the check
    CHECK_FALSE(lookup(*cache, "10.1.0.1"));
    cache->store("192.0.2.77", results(4'000'000'000, 0));
    CHECK(lookup(*cache, "192.0.2.77"));
    auto aside = moved_aside(dir.dir());
    std::sort(aside.begin(), aside.end());
    REQUIRE(aside.size() == 2);  // PATH.corrupt-<time> and PATH.corrupt-<time>-lock
    CHECK(aside[1].string() == aside[0].string() + "-lock");
    CHECK(slurp(aside[0].string()).size() >= 4096);
    cache.reset();
    CHECK(check_lmdb_file(path).verdict == LmdbFileCheck::Verdict::Usable);
    CHECK(check_lmdb_file(path).records == 1);
}

// --------------------------------------------------------------------------- a full map

TEST_CASE("lmdb cache: a full map is cleaned a bounded step per store, resuming where it stopped") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    auto cache = open_lmdb_cache(dir.path("c"), log, size_t{256} << 10);
    auto old_key = [](int i) { return "old-" + std::to_string(100000 + i); };
    auto count_old = [&](int n) {
        int present = 0;
        for (int i = 0; i < n; ++i) cache->lookup(old_key(i), [&](std::optional<TestResults> r) { present += r ? 1 : 0; });
        return present;
    };
    // Fill the map with expired passes until a store finds it full: the first old
    // record (the lowest key) is then gone.
    int n = 0;
    for (; n < 100000; ++n) {
        cache->store(old_key(n), results(100, 100));
        if (!lookup(*cache, old_key(0))) break;
    }
    ++n;
    REQUIRE(n < 100000);
    REQUIRE(n > 3 * static_cast<int>(kLmdbSweepBatch));
    // One full store removed at most one batch of expired records, not all of them.
    int before = count_old(n);
    CHECK(before >= n - static_cast<int>(kLmdbSweepBatch));
    // New, live passes: each store removes at most a batch, and over time every
    // expired record goes while the live ones stay.
    const int64_t later = 4'000'000'000;
    int stored = 0;
    for (; stored < 20 * n && before > 0; ++stored) {
        cache->store("new-" + std::to_string(100000 + stored), results(later, 0));
        if (stored < 100 || stored % 200 == 0) {
            const int now_old = count_old(n);
            if (stored < 100) CHECK(before - now_old <= static_cast<int>(kLmdbSweepBatch));
            before = now_old;
        }
    }
    CHECK(before == 0);
    int live = 0;
    for (int i = 0; i < stored; ++i) live += lookup(*cache, "new-" + std::to_string(100000 + i)) ? 1 : 0;
    CHECK(live >= n / 2);
}

// ------------------------------------------------------------------------------ file modes

TEST_CASE("lmdb cache: its directory is 0700 and its files 0600 whatever the umask") {
    TempDir dir("smtpscreen-cache");
    Logger log(false, "smtpscreen-test", false);
    const std::string path = dir.path("state/cache.lmdb");
    for (mode_t mask : {mode_t{0}, mode_t{0277}}) {
        fs::remove_all(dir.path("state"));
        const mode_t old = ::umask(mask);
        {
            auto cache = open_lmdb_cache(path, log);
            cache->store("192.0.2.1", results(4'000'000'000, 0));
        }
        ::umask(old);
        struct stat st {};
        REQUIRE(::stat(dir.path("state").c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0700);
        REQUIRE(::stat(path.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
        REQUIRE(::stat((path + "-lock").c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
    }
}
