// The `lmdb` cache backend: one memory-mapped file that survives restarts, shared by
// every loop thread of the process (and by other processes on the same file).
#include <lmdb.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <filesystem>
#include <stdexcept>

#include "cache/verdict_cache.h"

namespace smtpscreen {
namespace {

// Big enough for a few million records (a record is ~100 bytes with its key and page
// overhead); LMDB only reserves address space, the file grows as records arrive.
constexpr size_t kMapSize = size_t{256} << 20;

// Record layout: a version byte, then one int64 little-endian pass_until per test, in
// Test order. A record with fewer tests (written before a test was added) is read with
// the missing ones as "never passed", so adding a test does not void the cache.
constexpr uint8_t kRecordVersion = 1;
constexpr size_t kRecordSize = 1 + 8 * kTestCount;

std::string encode_record(const TestResults& r) {
    std::string out(kRecordSize, '\0');
    out[0] = static_cast<char>(kRecordVersion);
    for (size_t t = 0; t < kTestCount; ++t) {
        const auto v = static_cast<uint64_t>(r.pass_until[t]);
        for (size_t b = 0; b < 8; ++b) out[1 + 8 * t + b] = static_cast<char>((v >> (8 * b)) & 0xff);
    }
    return out;
}

std::optional<TestResults> decode_record(const MDB_val& v) {
    const auto* p = static_cast<const unsigned char*>(v.mv_data);
    if (v.mv_size < 1 + 8 || (v.mv_size - 1) % 8 != 0 || p[0] != kRecordVersion) return std::nullopt;
    TestResults r;
    const size_t stored = std::min((v.mv_size - 1) / 8, kTestCount);
    for (size_t t = 0; t < stored; ++t) {
        uint64_t x = 0;
        for (size_t b = 0; b < 8; ++b) x |= static_cast<uint64_t>(p[1 + 8 * t + b]) << (8 * b);
        r.pass_until[t] = static_cast<int64_t>(x);
    }
    return r;
}

bool all_expired(const TestResults& r, int64_t now) {
    return std::all_of(r.pass_until.begin(), r.pass_until.end(), [now](int64_t t) { return t <= now; });
}

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

class LmdbCache final : public VerdictCache {
public:
    LmdbCache(const std::string& path, Logger& log) : path_(path), log_(log) {
        MDB_env* raw = nullptr;
        if (int rc = mdb_env_create(&raw); rc != 0) throw std::runtime_error(open_error(path, rc));
        env_.reset(raw);
        if (int rc = mdb_env_set_mapsize(raw, kMapSize); rc != 0) throw std::runtime_error(open_error(path, rc));
        // MDB_NOSUBDIR: cache.path names the file (its lock is path + "-lock").
        // MDB_NOTLS: read transactions are not tied to a thread, so any loop thread can
        //   look up; writers are serialised by LMDB's own lock.
        // MDB_NOSYNC | MDB_NOMETASYNC: a session must never wait for fsync. A crash (not
        //   a clean exit) may lose the last seconds of passes; the cost is one greet
        //   wait for those clients on their next connection. The file stays consistent.
        const unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC | MDB_NOMETASYNC;
        if (int rc = mdb_env_open(raw, path.c_str(), flags, 0600); rc != 0) {
            throw std::runtime_error(open_error(path, rc));
        }
        // Reader slots left behind by a process that crashed would otherwise pin old
        // pages and make the file grow.
        int stale = 0;
        mdb_reader_check(raw, &stale);

        Txn txn(raw, 0);
        if (txn.begin_error() != 0) throw std::runtime_error(open_error(path, txn.begin_error()));
        if (int rc = mdb_dbi_open(txn.get(), nullptr, 0, &dbi_); rc != 0) throw std::runtime_error(open_error(path, rc));
        if (int rc = txn.commit(); rc != 0) throw std::runtime_error(open_error(path, rc));
    }

    void lookup(const std::string& client_ip, LookupDone done) override {
        done(read(client_ip));
    }

    void store(const std::string& client_ip, const TestResults& results) override {
        if (client_ip.empty()) return;
        int rc = write(client_ip, results);
        if (rc == MDB_MAP_FULL) {
            // Make room from what has expired before giving up on this pass.
            purge_expired(static_cast<int64_t>(std::time(nullptr)));
            rc = write(client_ip, results);
        }
        if (rc != 0) report("store", client_ip, rc);
    }

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
            const auto r = decode_record(val);
            if (!r || all_expired(*r, now)) {
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

private:
    std::optional<TestResults> read(const std::string& client_ip) {
        if (client_ip.empty()) return std::nullopt;
        Txn txn(env_.get(), MDB_RDONLY);
        if (txn.begin_error() != 0) {
            report("lookup", client_ip, txn.begin_error());
            return std::nullopt;
        }
        MDB_val key = as_val(client_ip), val;
        const int rc = mdb_get(txn.get(), dbi_, &key, &val);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        if (rc != 0) {
            report("lookup", client_ip, rc);
            return std::nullopt;
        }
        // Copied out before the transaction ends: val points into the map.
        return decode_record(val);
    }

    int write(const std::string& client_ip, const TestResults& results) {
        Txn txn(env_.get(), 0);
        if (txn.begin_error() != 0) return txn.begin_error();
        const std::string record = encode_record(results);
        MDB_val key = as_val(client_ip), val = as_val(record);
        if (int rc = mdb_put(txn.get(), dbi_, &key, &val, 0); rc != 0) return rc;
        return txn.commit();
    }

    // A failing disk would fail every session's store: log the 1st, 2nd, 4th, 8th, ...
    // failure so the log says what is wrong without drowning in it.
    void report(const char* op, const std::string& client_ip, int rc) {
        const uint64_t n = ++failures_;
        if ((n & (n - 1)) != 0) return;
        log_.warn("verdict cache {}: {}{}{}: {} ({} failure{} so far; check the disk and the file's permissions)",
                  path_, op, client_ip.empty() ? "" : " ", client_ip, mdb_strerror(rc), n, n == 1 ? "" : "s");
    }

    std::string path_;
    Logger& log_;
    EnvHandle env_;
    MDB_dbi dbi_ = 0;
    std::atomic<uint64_t> failures_{0};
};

}  // namespace

std::shared_ptr<VerdictCache> open_lmdb_cache(const std::string& path, Logger& log) {
    return std::make_shared<LmdbCache>(path, log);
}

}  // namespace smtpscreen
