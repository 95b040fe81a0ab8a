#include "proxy/cache_command.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>

#include "cache/cache_file.h"
#include "cache/redis_blocking.h"
#include "cache/verdict_cache.h"
#include "core/address.h"
#include "core/log.h"

namespace smtpscreen {
namespace {

constexpr const char* kCacheUsage =
    "usage: smtpscreen [-c FILE] cache list | show IP | delete IP | flush | stats\n";

int fail(const std::string& what) {
    std::fprintf(stderr, "smtpscreen cache: %s\n", what.c_str());
    return 1;
}

// "2026-12-07T16:42:05Z": sortable, the same in every time zone.
std::string utc(int64_t t) {
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string list_line(const std::string& ip, const TestResults& r) {
    std::string line = ip;
    for (size_t i = 0; i < kTestCount; ++i) {
        const auto t = static_cast<Test>(i);
        line += fmt::format(" {}={}", test_name(t), r[t] == 0 ? std::string("-") : utc(r[t]));
    }
    return line;
}

std::string show_text(const std::string& ip, const TestResults& r, int64_t now) {
    std::string out = ip + "\n";
    for (size_t i = 0; i < kTestCount; ++i) {
        const auto t = static_cast<Test>(i);
        std::string state;
        if (r[t] == 0) state = "never passed";
        else if (r[t] > now) state = fmt::format("passed, valid until {} ({}s left)", utc(r[t]), r[t] - now);
        else state = fmt::format("expired at {}", utc(r[t]));
        out += fmt::format("  {:<14}{}\n", test_name(t), state);
    }
    return out;
}

// A ban record, for `list` (one line) and `show` (an indented line under the address).
std::string ban_list_line(const std::string& ip, const Ban& ban) {
    return fmt::format("{} ban until={} count={} failures={}", ip, utc(ban.until_ms / 1000), ban.count, ban.failures);
}

std::string ban_show_line(const Ban& ban, int64_t now) {
    const int64_t until = ban.until_ms / 1000;
    std::string state = until > now ? fmt::format("banned until {} ({}s left)", utc(until), until - now)
                                    : fmt::format("ban ended at {}", utc(until));
    state += fmt::format(", ban {} in a row, after {} failures", ban.count, ban.failures);
    // Redis forgets the key itself (its TTL), so a record read there has no date of its own.
    if (ban.keep_until_ms != INT64_MAX) state += fmt::format("; remembered until {}", utc(ban.keep_until_ms / 1000));
    return fmt::format("  {:<14}{}\n", "ban", state);
}

// The key the daemon uses: the address as it formats it ("2001:db8::1", never
// "2001:DB8:0::1").
std::optional<std::string> client_key(const std::string& text) {
    auto ep = Endpoint::parse_ip(text);
    if (!ep) return std::nullopt;
    return ep->ip();
}

// Run as root beside a daemon that runs as process.user, LMDB would create a missing
// lock file owned by root, which the daemon could then not open: give it the cache
// file's owner.
void match_lock_owner(const std::string& path, bool lock_existed) {
    if (lock_existed || ::geteuid() != 0) return;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return;
    if (::chown(lmdb_lock_path(path).c_str(), st.st_uid, st.st_gid) != 0) {
        std::fprintf(stderr, "smtpscreen cache: warning: cannot give %s to the owner of %s\n",
                     lmdb_lock_path(path).c_str(), path.c_str());
    }
}

// One verb on an open cache. where: how messages name the cache ("/var/lib/...",
// "redis:127.0.0.1:6379"); about: the lines `stats` prints after naming it.
int carry_out(const CacheStores& stores, const std::string& verb, const std::string& ip, const std::string& where,
              const std::vector<std::string>& about) {
    VerdictCache& cache = *stores.verdicts;
    BanStore& bans = *stores.bans;
    const auto now = static_cast<int64_t>(std::time(nullptr));
    if (verb == "list") {
        cache.for_each([](const std::string& key, const TestResults& r) {
            std::printf("%s\n", list_line(key, r).c_str());
        });
        bans.for_each_ban([](const std::string& key, const Ban& ban) {
            std::printf("%s\n", ban_list_line(key, ban).c_str());
        });
    } else if (verb == "show") {
        std::optional<TestResults> found;
        cache.lookup(ip, [&found](std::optional<TestResults> r) { found = r; });
        std::optional<Ban> ban;
        bans.lookup_ban(ip, [&ban](std::optional<Ban> b) { ban = b; });
        if (!found && !ban) return fail(fmt::format("{} is not in the cache {}", ip, where));
        std::fputs((found ? show_text(ip, *found, now) : ip + "\n").c_str(), stdout);
        if (ban) std::fputs(ban_show_line(*ban, now).c_str(), stdout);
    } else if (verb == "delete") {
        const bool had_record = cache.erase(ip);
        const bool had_ban = bans.erase_ban(ip);
        if (!had_record && !had_ban) return fail(fmt::format("{} is not in the cache {}", ip, where));
        if (had_ban) std::printf("lifted the ban of %s in %s, and forgot its earlier bans\n", ip.c_str(), where.c_str());
        if (had_record) {
            std::printf("deleted %s from %s: its next connection goes through the tests again\n", ip.c_str(),
                        where.c_str());
        }
    } else if (verb == "flush") {
        const size_t n = cache.erase_all();
        std::printf("flushed %s: %zu record%s deleted (bans included); every client goes through the tests again\n",
                    where.c_str(), n, n == 1 ? "" : "s");
    } else {
        size_t records = 0;
        size_t live = 0;
        std::array<size_t, kTestCount> passes{};
        cache.for_each([&](const std::string&, const TestResults& r) {
            ++records;
            bool any = false;
            for (size_t i = 0; i < kTestCount; ++i) {
                if (r.pass_until[i] > now) {
                    ++passes[i];
                    any = true;
                }
            }
            if (any) ++live;
        });
        size_t banned = 0;
        size_t remembered = 0;
        bans.for_each_ban([&](const std::string&, const Ban& ban) {
            ++remembered;
            if (ban.until_ms / 1000 > now) ++banned;
        });
        for (const auto& line : about) std::printf("%s\n", line.c_str());
        std::printf("records: %zu\n", records);
        std::printf("records with a valid pass: %zu\n", live);
        std::printf("records with every pass expired: %zu\n", records - live);
        for (size_t i = 0; i < kTestCount; ++i) {
            std::printf("valid %s passes: %zu\n", std::string(test_name(static_cast<Test>(i))).c_str(), passes[i]);
        }
        std::printf("bans in force: %zu\n", banned);
        std::printf("bans remembered (in force or ended): %zu\n", remembered);
    }
    std::fflush(stdout);
    return 0;
}

int on_lmdb(const Config& config, const std::string& config_path, const std::string& verb, const std::string& ip) {
    const std::string& path = config.cache_path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return fail(fmt::format("there is no cache file {} (cache.path in {}): the daemon has not run with it yet, "
                                "or the path is relative to the directory the daemon runs in",
                                path, config_path));
    }
    const bool lock_existed = ::access(lmdb_lock_path(path).c_str(), F_OK) == 0;
    try {
        Logger log(false, "smtpscreen", true);
        auto stores = open_lmdb_stores(path, log);
        match_lock_owner(path, lock_existed);
        return carry_out(stores, verb, ip, path,
                         {"cache: lmdb:" + path, fmt::format("file size: {} bytes", static_cast<long long>(st.st_size))});
    } catch (const std::exception& e) {
        return fail(e.what());
    }
}

// The daemon's own records through a blocking client; only keys with cache.redis_prefix
// are listed or deleted, whatever else the database holds.
int on_redis(const Config& config, const std::string& verb, const std::string& ip) {
    const RedisSettings settings = config.redis_settings();
    // hiredis writes with write(2): a connection Redis closed must be an error message.
    ::signal(SIGPIPE, SIG_IGN);
    try {
        // Longer than a session would wait: a SCAN over a big cache takes a while.
        auto cache = open_redis_cache_blocking(settings, std::max<Millis>(settings.timeout, Millis(5000)));
        return carry_out(cache, verb, ip, "redis:" + settings.address,
                         {"cache: redis:" + settings.address,
                          fmt::format("keys: {}<address> in database {}", settings.prefix, settings.db)});
    } catch (const std::exception& e) {
        return fail(e.what());
    }
}

}  // namespace

int run_cache_command(const Config& config, const std::string& config_path, const std::vector<std::string>& args) {
    if (args.empty()) {
        std::fputs(kCacheUsage, stderr);
        return 2;
    }
    const std::string& verb = args[0];
    const bool takes_ip = verb == "show" || verb == "delete";
    if ((verb != "list" && verb != "flush" && verb != "stats" && !takes_ip) || args.size() != (takes_ip ? 2u : 1u)) {
        std::fputs(kCacheUsage, stderr);
        return 2;
    }
    std::string ip;
    if (takes_ip) {
        auto key = client_key(args[1]);
        if (!key) {
            std::fprintf(stderr, "smtpscreen cache: \"%s\" is not an IPv4 or IPv6 address\n%s", args[1].c_str(),
                         kCacheUsage);
            return 2;
        }
        ip = *key;
    }

    switch (config.cache_backend) {
    case CacheBackend::Lmdb: return on_lmdb(config, config_path, verb, ip);
    case CacheBackend::Redis: return on_redis(config, verb, ip);
    case CacheBackend::Memory: break;
    }
    return fail(fmt::format("{} sets cache.backend = memory: the records live inside the running daemon and "
                            "nothing outside it can read or change them (they are gone at its next restart); "
                            "use cache.backend = lmdb or redis to edit the cache while it runs",
                            config_path));
}


}  // namespace smtpscreen
