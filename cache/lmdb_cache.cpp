// The `lmdb` cache backend: one memory-mapped file that survives restarts, shared by
// every loop thread of the process (and by other processes on the same file).
#include <fmt/format.h>
#include <lmdb.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <filesystem>
#include <functional>
#include <mutex>
#include <stdexcept>

#include "cache/ban_record.h"
#include "cache/ban_store.h"
#include "cache/cache_file.h"
#include "cache/lmdb_file_check.h"
#include "cache/lmdb_record.h"
#include "cache/verdict_cache.h"

namespace smtpscreen {
namespace {

MDB_val as_val(const std::string& s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

struct EnvClose {
    void operator()(MDB_env* env) const { mdb_env_close(env); }
};
using EnvHandle = std::unique_ptr<MDB_env, EnvClose>;

// A transaction that is aborted unless committed, so that every early return and
// every exception releases its reader slot or the write lock.
class Txn {
public:
    Txn(MDB_env* env, unsigned flags) { rc_ = mdb_txn_begin(env, nullptr, flags, &txn_); }
    ~Txn() {
        if (txn_ != nullptr) mdb_txn_abort(txn_);
    }
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;

    int begin_error() const { return rc_; }
    MDB_txn* get() const { return txn_; }
    int commit() {
        const int rc = mdb_txn_commit(txn_);  // frees the txn even when it fails
        txn_ = nullptr;
        return rc;
    }

private:
    MDB_txn* txn_ = nullptr;
    int rc_ = 0;
};

struct CursorClose {
    void operator()(MDB_cursor* c) const { mdb_cursor_close(c); }
};

std::string open_error(const std::string& path, int rc) {
    const std::string what = "cannot open the verdict cache " + path + ": " + mdb_strerror(rc);
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    const std::string dir_text = dir.empty() ? "." : dir.string();
    switch (rc) {
        case ENOENT:
            return what + " (the directory " + dir_text +
                   " does not exist: create it, or set cache.path to a file in an existing directory)";
        case EACCES:
        case EPERM:
            return what + " (make " + path + ", " + path + "-lock and the directory " + dir_text +
                   " writable by the user smtpscreen runs as, or set cache.path elsewhere)";
        case EROFS:
            return what + " (the file system is read-only: set cache.path to a writable location)";
        case MDB_INVALID:
            return what + " (it is not an LMDB file: set cache.path to another file, or remove this one if it " +
                   "is an old cache)";
        case MDB_VERSION_MISMATCH:
            return what + " (it was written by another LMDB version: remove it and its -lock file; it only " +
                   "holds cached passes)";
        default:
            return what + " (check cache.path, the disk space and the permissions)";
    }
}

std::string_view as_view(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// Thrown while opening when the file itself is unusable (as opposed to the directory,
// the permissions or the disk): such a file is moved aside and replaced.
struct UnusableFile : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// How long sweeping rests after a whole pass over the records found nothing expired.
constexpr int64_t kSweepPauseSeconds = 10;

bool is_file_damage(int rc) {
    return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
           rc == MDB_PANIC;
}

// The verdicts, greylisting's archive (edge/greylist.h) and the bans (cache/ban_record.h)
// in one file: triplets and bans are records of their own (cache/lmdb_record.h), so
// they share the map, the cleanup and the check at open, and never a second environment
// on the file (LMDB allows one per file per process; see open_lmdb_cache).
class LmdbCache final : public VerdictCache,
                        public GreylistArchive,
                        public BanStore,
                        public std::enable_shared_from_this<LmdbCache> {
public:
    // `verify`: walk every record through LMDB once it is open (the file was checked
    // and nobody else has it open).
    LmdbCache(const std::string& path, Logger& log, size_t map_size, bool verify) : path_(path), log_(log) {
        MDB_env* raw = nullptr;
        if (int rc = mdb_env_create(&raw); rc != 0) throw std::runtime_error(open_error(path, rc));
        env_.reset(raw);
        if (int rc = mdb_env_set_mapsize(raw, map_size); rc != 0) throw std::runtime_error(open_error(path, rc));
        // MDB_NOSUBDIR: cache.path names the file (its lock is path + "-lock").
        // MDB_NOTLS: read transactions are not tied to a thread, so any loop thread can
        //   look up; writers are serialised by LMDB's own lock.
        // MDB_NOSYNC | MDB_NOMETASYNC: a session must never wait for fsync. A crash of
        //   the process loses nothing; a crash of the system may lose the last seconds
        //   of passes or leave the file damaged, which the check at open catches (the
        //   file is then moved aside: the cost is one greet wait per client).
        const unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC | MDB_NOMETASYNC;
        if (int rc = mdb_env_open(raw, path.c_str(), flags, 0600); rc != 0) {
            if (is_file_damage(rc)) throw UnusableFile(mdb_strerror(rc));
            throw std::runtime_error(open_error(path, rc));
        }
        // Reader slots left behind by a process that crashed would otherwise pin old
        // pages and make the file grow.
        int stale = 0;
        mdb_reader_check(raw, &stale);

        Txn txn(raw, 0);
        if (txn.begin_error() != 0) throw std::runtime_error(open_error(path, txn.begin_error()));
        if (int rc = mdb_dbi_open(txn.get(), nullptr, 0, &dbi_); rc != 0) {
            if (is_file_damage(rc)) throw UnusableFile(mdb_strerror(rc));
            throw std::runtime_error(open_error(path, rc));
        }
        if (int rc = txn.commit(); rc != 0) throw std::runtime_error(open_error(path, rc));
        MDB_envinfo info{};
        MDB_stat st{};
        mdb_env_info(raw, &info);
        mdb_env_stat(raw, &st);
        map_pages_ = info.me_mapsize / std::max<size_t>(st.ms_psize, 1);
        if (verify) {
            if (std::string problem = walk_records(); !problem.empty()) throw UnusableFile(problem);
        }
    }

    void lookup(const std::string& client_ip, LookupDone done) override {
        done(read(client_ip));
    }

    void store(const std::string& client_ip, const TestResults& results) override {
        if (client_ip.empty()) return;
        store_bytes("store", client_ip, encode_lmdb_record(results));
    }

    std::shared_ptr<GreylistArchive> greylist_archive() override { return shared_from_this(); }

    void load_triplets(const Visitor& visit) override {
        const int rc = walk_prefix(kLmdbGreylistPrefix, [&visit](std::string_view triplet, std::string_view value) {
            if (auto entry = decode_lmdb_greylist_entry(value)) visit(std::string(triplet), *entry);
        });
        if (rc != 0) report("greylist load", "", rc);
    }

    void keep_triplet(const std::string& triplet, const GreylistEntry& entry) override {
        const std::string key = std::string(kLmdbGreylistPrefix) + triplet;
        if (key.size() > kLmdbMaxKey) return;  // kept in memory only
        store_bytes("greylist store", key, encode_lmdb_greylist_entry(entry));
    }

    void forget_triplet(const std::string& triplet) override {
        const std::string key = std::string(kLmdbGreylistPrefix) + triplet;
        if (key.size() > kLmdbMaxKey) return;
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) return report("greylist delete", key, txn.begin_error());
        MDB_val k = as_val(key);
        const int rc = mdb_del(txn.get(), dbi_, &k, nullptr);
        if (rc == MDB_NOTFOUND) return;
        if (rc != 0) return report("greylist delete", key, rc);
        if (int c = txn.commit(); c != 0) report("greylist delete", key, c);
    }

    void lookup_ban(const std::string& client_ip, BanFound done) override {
        done(get(lmdb_ban_key(client_ip), client_ip, decode_lmdb_ban));
    }

    void store_ban(const std::string& client_ip, const Ban& ban) override {
        if (client_ip.empty()) return;
        store_bytes("ban", lmdb_ban_key(client_ip), encode_lmdb_ban(ban));
    }

    void for_each_ban(const BanVisitor& visit) override {
        const int rc = walk_prefix(kBanKeyPrefix, [&visit](std::string_view client_ip, std::string_view value) {
            if (auto ban = decode_lmdb_ban(value)) visit(std::string(client_ip), *ban);
        });
        if (rc != 0) throw std::runtime_error(failure("read", rc));
    }

    bool erase_ban(const std::string& client_ip) override { return erase(lmdb_ban_key(client_ip)); }

    size_t purge_expired(int64_t now) override {
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) {
            report("purge", "", txn.begin_error());
            return 0;
        }
        MDB_cursor* raw = nullptr;
        if (int rc = mdb_cursor_open(txn.get(), dbi_, &raw); rc != 0) {
            report("purge", "", rc);
            return 0;
        }
        std::unique_ptr<MDB_cursor, CursorClose> cursor(raw);
        size_t removed = 0;
        MDB_val key, val;
        for (int rc = mdb_cursor_get(raw, &key, &val, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(raw, &key, &val, MDB_NEXT)) {
            if (lmdb_record_lapsed(as_view(key), as_view(val), now)) {
                if (mdb_cursor_del(raw, 0) == 0) ++removed;
            }
        }
        cursor.reset();  // a write cursor must be closed before its commit
        if (int rc = txn.commit(); rc != 0) {
            report("purge", "", rc);
            return 0;
        }
        return removed;
    }

    void cleanup_step(int64_t now, size_t limit, Cleanup& cleanup) override {
        size_t retained = 0;
        size_t deleted = 0;
        std::string next;
        if (!delete_expired(now, cleanup.next_key, limit, next, deleted, retained, "cleanup")) {
            cleanup.done = true;
            return;
        }
        cleanup.retained += retained;
        cleanup.dropped += deleted;
        cleanup.next_key = std::move(next);
        cleanup.done = cleanup.next_key.empty();
    }

    void for_each(const RecordVisitor& visit) override {
        Txn txn(env_.get(), MDB_RDONLY);
        if (txn.begin_error() != 0) throw std::runtime_error(failure("read", txn.begin_error()));
        MDB_cursor* raw = nullptr;
        if (int rc = mdb_cursor_open(txn.get(), dbi_, &raw); rc != 0) throw std::runtime_error(failure("read", rc));
        std::unique_ptr<MDB_cursor, CursorClose> cursor(raw);
        MDB_val key, val;
        int rc = mdb_cursor_get(raw, &key, &val, MDB_FIRST);
        for (; rc == 0; rc = mdb_cursor_get(raw, &key, &val, MDB_NEXT)) {
            if (is_lmdb_greylist_key(as_view(key)) || is_ban_key(as_view(key))) continue;  // not verdicts
            if (auto r = decode_lmdb_record(as_view(val))) visit(std::string(as_view(key)), *r);
        }
        if (rc != MDB_NOTFOUND) throw std::runtime_error(failure("read", rc));
    }

    bool erase(const std::string& client_ip) override {
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) throw std::runtime_error(failure("delete", txn.begin_error()));
        MDB_val key = as_val(client_ip);
        const int rc = mdb_del(txn.get(), dbi_, &key, nullptr);
        if (rc == MDB_NOTFOUND) return false;
        if (rc != 0) throw std::runtime_error(failure("delete", rc));
        if (int c = txn.commit(); c != 0) throw std::runtime_error(failure("delete", c));
        return true;
    }

    size_t erase_all() override {
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) throw std::runtime_error(failure("flush", txn.begin_error()));
        MDB_stat st{};
        if (int rc = mdb_stat(txn.get(), dbi_, &st); rc != 0) throw std::runtime_error(failure("flush", rc));
        // mdb_drop with del = 0 empties the database and keeps it: the daemon's handle
        // to it stays valid.
        if (int rc = mdb_drop(txn.get(), dbi_, 0); rc != 0) throw std::runtime_error(failure("flush", rc));
        if (int c = txn.commit(); c != 0) throw std::runtime_error(failure("flush", c));
        return st.ms_entries;
    }

private:
    std::string failure(const char* op, int rc) const {
        return fmt::format("verdict cache {}: {}: {}", path_, op, mdb_strerror(rc));
    }

    // Looks at up to `limit` records from `from` (empty: the first) and deletes the
    // expired ones, in one write transaction. `next`: the key the next step starts at,
    // empty when this one reached the last record. False after an error (logged).
    bool delete_expired(int64_t now, const std::string& from, size_t limit, std::string& next, size_t& deleted,
                        size_t& retained, const char* op) {
        next.clear();
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) return report(op, "", txn.begin_error()), false;
        MDB_cursor* raw = nullptr;
        if (int rc = mdb_cursor_open(txn.get(), dbi_, &raw); rc != 0) return report(op, "", rc), false;
        std::unique_ptr<MDB_cursor, CursorClose> cursor(raw);
        MDB_val key = as_val(from), val;
        int rc = mdb_cursor_get(raw, &key, &val, from.empty() ? MDB_FIRST : MDB_SET_RANGE);
        for (size_t seen = 0; rc == 0; ++seen) {
            if (seen == limit) {
                next.assign(as_view(key));
                break;
            }
            if (lmdb_record_lapsed(as_view(key), as_view(val), now)) {
                // The cursor then stands on the following record, which MDB_NEXT returns.
                if (int del = mdb_cursor_del(raw, 0); del != 0) return report(op, "", del), false;
                ++deleted;
            } else {
                ++retained;
            }
            rc = mdb_cursor_get(raw, &key, &val, MDB_NEXT);
        }
        if (rc != 0 && rc != MDB_NOTFOUND) return report(op, "", rc), false;
        cursor.reset();  // a write cursor must be closed before its commit
        if (deleted > 0) {
            if (int c = txn.commit(); c != 0) return report(op, "", c), false;
        }
        return true;
    }

    // Every record through LMDB's own cursor; returns what is wrong, or "".
    std::string walk_records() {
        Txn txn(env_.get(), MDB_RDONLY);
        if (txn.begin_error() != 0) return mdb_strerror(txn.begin_error());
        MDB_cursor* raw = nullptr;
        if (int rc = mdb_cursor_open(txn.get(), dbi_, &raw); rc != 0) return mdb_strerror(rc);
        std::unique_ptr<MDB_cursor, CursorClose> cursor(raw);
        MDB_val key, val;
        int rc = mdb_cursor_get(raw, &key, &val, MDB_FIRST);
        for (; rc == 0; rc = mdb_cursor_get(raw, &key, &val, MDB_NEXT)) {
            if (!lmdb_record_decodes(as_view(key), as_view(val))) return "a record does not decode";
        }
        return rc == MDB_NOTFOUND ? "" : mdb_strerror(rc);
    }

    // Removing expired records makes room a bounded step at a time: once the records
    // fill three quarters of the map, each store looks at up to `limit` more records
    // from where the previous step stopped and deletes the expired ones, in one write
    // transaction. A full purge at MDB_MAP_FULL (what this replaces) scanned every
    // record on the event loop at every new pass once the map was full of live ones,
    // and could not even run then: LMDB needs free pages to copy the pages a delete
    // changes. Growing the map instead would need every thread's transactions stopped
    // (mdb_env_set_mapsize) and would only move the limit. The last quarter leaves the
    // deletes their room; a run of neighbouring expired records frees whole pages.
    void sweep_expired(int64_t now, size_t limit) {
        std::lock_guard<std::mutex> lock(sweep_mutex_);
        if (now < sweep_pause_until_) return;
        std::string next_from;
        size_t deleted = 0;
        size_t retained = 0;
        if (!delete_expired(now, sweep_from_, limit, next_from, deleted, retained, "sweep")) return;
        sweep_from_ = std::move(next_from);
        cycle_deleted_ += deleted;
        if (sweep_from_.empty()) {
            // A whole pass over the records: if it found nothing expired, the map is
            // full of live passes and another pass right away would find nothing either.
            if (cycle_deleted_ == 0) sweep_pause_until_ = now + kSweepPauseSeconds;
            cycle_deleted_ = 0;
        }
    }

    std::optional<TestResults> read(const std::string& client_ip) {
        if (client_ip.empty()) return std::nullopt;
        return get(client_ip, client_ip, decode_lmdb_record);
    }

    // Every record whose key starts with `prefix` (such keys sort together), with the rest
    // of its key; 0, or the LMDB error that stopped the walk.
    int walk_prefix(std::string_view prefix,
                    const std::function<void(std::string_view rest, std::string_view value)>& visit) {
        Txn txn(env_.get(), MDB_RDONLY);
        if (txn.begin_error() != 0) return txn.begin_error();
        MDB_cursor* raw = nullptr;
        if (int rc = mdb_cursor_open(txn.get(), dbi_, &raw); rc != 0) return rc;
        std::unique_ptr<MDB_cursor, CursorClose> cursor(raw);
        const std::string first(prefix);
        MDB_val key = as_val(first), val;
        int rc = mdb_cursor_get(raw, &key, &val, MDB_SET_RANGE);
        for (; rc == 0 && as_view(key).substr(0, prefix.size()) == prefix; rc = mdb_cursor_get(raw, &key, &val, MDB_NEXT)) {
            visit(as_view(key).substr(prefix.size()), as_view(val));
        }
        return rc == MDB_NOTFOUND ? 0 : rc;
    }

    // The value at `k` decoded (nullopt when absent), before the transaction ends: LMDB's
    // value points into the map.
    template <typename T>
    std::optional<T> get(const std::string& k, const std::string& client_ip,
                         std::optional<T> (*decode)(std::string_view)) {
        Txn txn(env_.get(), MDB_RDONLY);
        if (txn.begin_error() != 0) {
            report("lookup", client_ip, txn.begin_error());
            return std::nullopt;
        }
        MDB_val key = as_val(k), val;
        const int rc = mdb_get(txn.get(), dbi_, &key, &val);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        if (rc != 0) {
            report("lookup", client_ip, rc);
            return std::nullopt;
        }
        return decode(as_view(val));
    }

    void store_bytes(const char* op, const std::string& key, const std::string& record) {
        const auto now = static_cast<int64_t>(std::time(nullptr));
        size_t pages = 0;
        int rc = write(key, record, pages);
        if (rc == MDB_MAP_FULL) {
            // The map is full of passes that have not expired (or the sweeps below
            // have not reached the expired ones yet): one more bounded step, one retry.
            sweep_expired(now, kLmdbSweepBatch);
            rc = write(key, record, pages);
        } else if (rc == 0 && pages > map_pages_ / 4 * 3) {
            sweep_expired(now, kLmdbSweepBatch);
        }
        if (rc != 0) report(op, key, rc);
    }

    // `pages`: how many pages the records take after this write.
    int write(const std::string& k, const std::string& record, size_t& pages) {
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) return txn.begin_error();
        MDB_val key = as_val(k), val = as_val(record);
        if (int rc = mdb_put(txn.get(), dbi_, &key, &val, 0); rc != 0) return rc;
        MDB_stat st{};
        if (mdb_stat(txn.get(), dbi_, &st) == 0) pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
        return txn.commit();
    }

    // A failing disk would fail every session's store: log the 1st, 2nd, 4th, 8th, ...
    // failure so the log says what is wrong without drowning in it.
    void report(const char* op, const std::string& client_ip, int rc) {
        const uint64_t n = ++failures_;
        if ((n & (n - 1)) != 0) return;
        const char* advice = rc == MDB_MAP_FULL ? "the cache is full of unexpired passes; shorter cache.*_ttl values "
                                                  "make room sooner"
                                                : "check the disk and the file's permissions";
        log_.warn("verdict cache {}: {}{}{}: {} ({} failure{} so far; {})", path_, op, client_ip.empty() ? "" : " ",
                  client_ip, mdb_strerror(rc), n, n == 1 ? "" : "s", advice);
    }

    std::string path_;
    Logger& log_;
    EnvHandle env_;
    MDB_dbi dbi_ = 0;
    std::atomic<uint64_t> failures_{0};
    size_t map_pages_ = 0;
    std::mutex sweep_mutex_;
    std::string sweep_from_;  // the key the next sweep starts at; empty: the first one
    size_t cycle_deleted_ = 0;
    int64_t sweep_pause_until_ = 0;
};

// The file at `path` cannot be used: move it aside and start an empty cache there; if
// it cannot be moved, keep passes in memory until the next start.
CacheStores replace_unusable(const std::string& path, const std::string& problem, Logger& log, size_t map_size) {
    std::string error;
    const auto moved = move_cache_aside(path, static_cast<int64_t>(std::time(nullptr)), error);
    if (!moved) {
        log.error("cache file {} is corrupt ({}) and cannot be moved aside ({}): keeping passes in memory until "
                  "the next start; remove the file or make its directory writable by smtpscreen",
                  path, problem, error);
        return {open_memory_cache(), open_memory_bans()};
    }
    log.warn("cache file {} is corrupt ({}): moved aside to {}; starting with an empty cache", path, problem, *moved);
    auto cache = std::make_shared<LmdbCache>(path, log, map_size, false);
    make_owner_only(path);
    make_owner_only(lmdb_lock_path(path));
    return {cache, cache};
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

CacheStores open_lmdb_stores(const std::string& path, Logger& log, size_t map_size) {
    create_cache_directory(path);
    const bool new_file = !exists(path), new_lock = !exists(lmdb_lock_path(path));
    // A file another process has open is in use there: checking it against a writer
    // could misread it, and moving it would pull it from under that process.
    const bool exclusive = !cache_open_elsewhere(path);
    if (exclusive && !new_file) {
        const LmdbFileCheck found = check_lmdb_file(path);
        if (found.verdict == LmdbFileCheck::Verdict::Foreign) throw std::runtime_error(open_error(path, MDB_INVALID));
        if (found.verdict == LmdbFileCheck::Verdict::Corrupt) return replace_unusable(path, found.problem, log, map_size);
    }
    std::shared_ptr<LmdbCache> cache;
    try {
        cache = std::make_shared<LmdbCache>(path, log, map_size, exclusive && !new_file);
    } catch (const UnusableFile& e) {
        if (!exclusive) throw std::runtime_error(open_error(path, MDB_CORRUPTED));
        return replace_unusable(path, e.what(), log, map_size);
    }
    if (new_file) make_owner_only(path);
    if (new_lock) make_owner_only(lmdb_lock_path(path));
    return {cache, cache};
}

std::shared_ptr<VerdictCache> open_lmdb_cache(const std::string& path, Logger& log, size_t map_size) {
    return open_lmdb_stores(path, log, map_size).verdicts;
}

}  // namespace smtpscreen
