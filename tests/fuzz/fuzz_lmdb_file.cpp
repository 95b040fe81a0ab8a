// Fuzz target: cache/lmdb_file_check.h. The input is an `lmdb` cache file. The check
// must never crash on it, and it is the only guard between a damaged file and LMDB,
// which trusts the file it maps: so whenever the check calls a file usable, LMDB must
// open it with the cache's flags, walk every record (as many as the check counted, each
// one decoding), store and delete records and commit, all without a crash or a sanitizer
// report; and the file LMDB leaves must pass the check again (a check that refused
// LMDB's own output would throw away good caches).
#include <lmdb.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include "cache/lmdb_file_check.h"
#include "cache/lmdb_record.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;

namespace {

// One scratch file per process, reused by every input, removed with its directory at exit.
class ScratchFile {
public:
    ScratchFile() {
        if (::mkdtemp(dir_.data()) == nullptr) std::abort();
        path_ = dir_ + "/cache";
    }
    ~ScratchFile() {
        ::unlink(path_.c_str());
        ::unlink((path_ + "-lock").c_str());
        ::rmdir(dir_.c_str());
    }
    const std::string& path() const { return path_; }

private:
    std::string dir_ = "/tmp/smtpscreen-fuzz-lmdb-XXXXXX";
    std::string path_;
};

const std::string& scratch_path() {
    static const ScratchFile scratch;
    return scratch.path();
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// What the cache does with a file it opened: walk, store, delete every other record.
void exercise_with_lmdb(const std::string& path, size_t records) {
    MDB_env* env = nullptr;
    FUZZ_CHECK(mdb_env_create(&env) == 0, "");
    mdb_env_set_mapsize(env, size_t{64} << 20);
    const int rc = mdb_env_open(env, path.c_str(), MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC | MDB_NOMETASYNC, 0600);
    FUZZ_CHECK(rc == 0, mdb_strerror(rc));
    MDB_txn* txn = nullptr;
    MDB_dbi dbi = 0;
    MDB_cursor* cursor = nullptr;
    FUZZ_CHECK(mdb_txn_begin(env, nullptr, 0, &txn) == 0, "");
    FUZZ_CHECK(mdb_dbi_open(txn, nullptr, 0, &dbi) == 0, "");
    FUZZ_CHECK(mdb_cursor_open(txn, dbi, &cursor) == 0, "");
    MDB_val key, val;
    size_t seen = 0;
    int step = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    for (; step == 0; step = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        ++seen;
        FUZZ_CHECK(lmdb_record_decodes({static_cast<const char*>(key.mv_data), key.mv_size},
                                       {static_cast<const char*>(val.mv_data), val.mv_size}),
                   "a record that passed");
    }
    FUZZ_CHECK(step == MDB_NOTFOUND, mdb_strerror(step));
    FUZZ_CHECK(seen == records, std::to_string(seen) + " records, the check counted " + std::to_string(records));
    TestResults r;
    r[Test::Pregreet] = 4'000'000'000;
    const std::string record = encode_lmdb_record(r);
    for (int i = 0; i < 200; ++i) {
        std::string k = "10.0." + std::to_string(i / 100) + "." + std::to_string(i);
        MDB_val a{k.size(), k.data()}, b{record.size(), const_cast<char*>(record.data())};
        const int put = mdb_put(txn, dbi, &a, &b, 0);
        FUZZ_CHECK(put == 0 || put == MDB_MAP_FULL, mdb_strerror(put));
        if (put != 0) break;
    }
    size_t n = 0;
    for (step = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); step == 0;
         step = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        if (++n % 2 == 0) mdb_cursor_del(cursor, 0);
    }
    mdb_cursor_close(cursor);
    const int commit = mdb_txn_commit(txn);
    FUZZ_CHECK(commit == 0 || commit == MDB_MAP_FULL, mdb_strerror(commit));
    mdb_env_close(env);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string& path = scratch_path();
    ::unlink((path + "-lock").c_str());
    write_file(path, data, size);
    const LmdbFileCheck first = check_lmdb_file(path);
    if (first.verdict != LmdbFileCheck::Verdict::Usable || size == 0) return 0;
    exercise_with_lmdb(path, first.records);
    const LmdbFileCheck again = check_lmdb_file(path);
    FUZZ_CHECK(again.verdict == LmdbFileCheck::Verdict::Usable, "LMDB's own file refused: " + again.problem);
    return 0;
}
