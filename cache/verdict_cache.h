#pragma once
// Where passes are remembered across connections and restarts. The interface is
// asynchronous so that a networked backend (Redis) fits without touching sessions;
// the embedded backends answer inline.
#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "cache/ban_store.h"
#include "core/log.h"
#include "edge/connection_rates.h"
#include "edge/greylist.h"
#include "screen/test_results.h"

namespace smtpscreen {

// cache.backend: an embedded LMDB file, a Redis server that several instances share
// (cache/redis_cache.h), or memory (lost at exit).
enum class CacheBackend { Lmdb, Redis, Memory };
inline constexpr std::array<std::pair<std::string_view, CacheBackend>, 3> kCacheBackendNames{{
    {"lmdb", CacheBackend::Lmdb}, {"redis", CacheBackend::Redis}, {"memory", CacheBackend::Memory}}};

class VerdictCache {
public:
    using LookupDone = std::function<void(std::optional<TestResults>)>;
    virtual ~VerdictCache() = default;

    // Key is the client IP as text. `done` may run inline (embedded backends) or later
    // from the loop; errors are logged and reported as "no record".
    virtual void lookup(const std::string& client_ip, LookupDone done) = 0;
    // Fire and forget; a failure is logged, never surfaced to the session.
    virtual void store(const std::string& client_ip, const TestResults& results) = 0;
    // Removes records in which every pass has expired (pass_until <= now) and returns
    // how many went. Expired records are harmless (a lookup reads them as "not
    // passed"), so this is housekeeping for a periodic timer, never the session path.
    // Backends that expire records themselves (Redis TTLs) keep the default.
    virtual size_t purge_expired(int64_t now) {
        (void)now;
        return 0;
    }

    // cache.cleanup_interval: one full pass over the records, made of bounded steps so
    // that no step holds the write lock (or the loop) for long. Each step looks at up to
    // `limit` records from `next_key` on, deletes the expired ones, and counts both.
    struct Cleanup {
        std::string next_key;  // where the next step starts; empty at the first
        size_t retained = 0;
        size_t dropped = 0;
        bool done = false;
    };
    virtual void cleanup_step(int64_t now, size_t limit, Cleanup& cleanup) {
        (void)now;
        (void)limit;
        cleanup.done = true;
    }

    // For `smtpscreen cache` beside a running daemon (README, "Cache tools"): every
    // record in key order, one record, removing one or all. Only a cache another
    // process can open (lmdb, and Redis through the cache tools' blocking client) has
    // them; the others throw std::runtime_error.
    using RecordVisitor = std::function<void(const std::string& client_ip, const TestResults& results)>;
    virtual void for_each(const RecordVisitor& visit) {
        (void)visit;
        throw std::runtime_error("this cache backend cannot be listed from another process");
    }
    virtual bool erase(const std::string& client_ip) {
        (void)client_ip;
        throw std::runtime_error("this cache backend cannot be edited from another process");
    }
    virtual size_t erase_all() { throw std::runtime_error("this cache backend cannot be edited from another process"); }

    // A backend that several instances share (Redis) counts the connection rate limits
    // too, so that the instances count each client together: the counts of the loop
    // this cache belongs to, to be destroyed before it, falling back to `fallback` when
    // the backend cannot answer in time. nullptr: `fallback`, this process's memory, is
    // where they are counted.
    virtual std::unique_ptr<ConnectionRates> loop_rates(ConnectionRates& fallback) {
        (void)fallback;
        return nullptr;
    }

    // Where greylisting's triplets outlive the process, when this backend keeps them
    // (lmdb: in the same file); null: they live in memory only.
    virtual std::shared_ptr<GreylistArchive> greylist_archive() { return nullptr; }

    // A backend that several instances share (Redis) keeps greylisting's triplets too,
    // so that a triplet first tried on one instance passes when retried on another: the
    // store of the loop this cache belongs to, to be destroyed before it. nullptr: the
    // triplets live in this process (SharedGreylistTable).
    virtual std::unique_ptr<GreylistStore> loop_greylist() { return nullptr; }
};

// One backend's verdicts and bans (cache/ban_store.h), kept side by side: often one
// object (an lmdb environment, a Redis connection) behind both.
struct CacheStores {
    std::shared_ptr<VerdictCache> verdicts;
    std::shared_ptr<BanStore> bans;
};

// What the server opens once from cache.*: every event loop asks it for the stores its
// sessions use, so that sessions never learn which backend they have. The embedded
// backends hand every loop the same objects (they are safe to share between threads);
// Redis gives each loop a connection of its own, driven by that loop.
class VerdictCacheSource {
public:
    virtual ~VerdictCacheSource() = default;
    // Called on the loop's thread, or before the loop runs. The stores are then used on
    // that thread only, and must be destroyed before the loop is closed.
    virtual CacheStores for_loop(uv_loop_t* loop) = 0;
    // The cache's archive for greylisting's triplets (VerdictCache::greylist_archive),
    // shared by every loop; null when they live in memory only.
    virtual std::shared_ptr<GreylistArchive> greylist_archive() { return nullptr; }
};

// A source that hands every loop the same stores (lmdb, memory).
class SharedVerdictCache final : public VerdictCacheSource {
public:
    explicit SharedVerdictCache(CacheStores stores) : stores_(std::move(stores)) {}
    CacheStores for_loop(uv_loop_t*) override { return stores_; }
    std::shared_ptr<GreylistArchive> greylist_archive() override { return stores_.verdicts->greylist_archive(); }

private:
    CacheStores stores_;
};

// Embedded backends are safe to share between loop threads. Throws std::runtime_error
// with a sentence naming the file and what to do when the backend cannot be opened.
//
// LMDB allows one environment per file per process ("do not have open an LMDB database
// twice in the same process at the same time"): open it once at start and keep the same
// object across SIGHUP reloads unless cache.path changes. `log` must outlive the cache.
//
// The file is checked before LMDB maps it (check_lmdb_file); a corrupt or truncated one
// is logged, moved aside to PATH.corrupt-<unix time> and replaced by an empty cache, so
// the daemon never stays down because of its cache. A missing directory (the last
// component of the path only) is created 0700 and new files are 0600, whatever the umask.
//
// Big enough for a few million records (a record is ~100 bytes with its key and page
// overhead); LMDB only reserves address space, the file grows as records arrive.
constexpr size_t kLmdbMapSize = size_t{256} << 20;
// Once the records fill three quarters of the map, each store looks at no more than
// this many records for expired ones to delete, resuming where the previous one stopped.
constexpr size_t kLmdbSweepBatch = 512;
std::shared_ptr<VerdictCache> open_lmdb_cache(const std::string& path, Logger& log, size_t map_size = kLmdbMapSize);
// The same file's verdicts and bans (one object behind both, or memory for both when the
// file was corrupt and could not be moved aside).
CacheStores open_lmdb_stores(const std::string& path, Logger& log, size_t map_size = kLmdbMapSize);
// At most kMemoryCacheMaxEntries records; when full, expired records go first, then the
// oldest stored.
constexpr size_t kMemoryCacheMaxEntries = 1'000'000;
std::shared_ptr<VerdictCache> open_memory_cache();
std::shared_ptr<VerdictCache> open_memory_cache(size_t max_entries);

}  // namespace smtpscreen
