#pragma once
// The file-system side of the `lmdb` cache: its directory and modes, whether another
// process has the file open, and moving a corrupt file out of the way.
#include <cstdint>
#include <optional>
#include <string>

namespace smtpscreen {

// LMDB's lock file next to a cache opened with MDB_NOSUBDIR.
std::string lmdb_lock_path(const std::string& path);

// Creates the directory of `path` with mode 0700 when it does not exist (its parent
// must); an existing directory is left as it is. Errors are left for the open that
// follows to report with its advice.
void create_cache_directory(const std::string& path);

// Sets mode 0600 on a file this process just created: LMDB creates with 0600 minus
// the umask, and a umask like 0277 would leave a file its owner cannot reopen.
void make_owner_only(const std::string& path);

// True when another process holds the cache open: every LMDB environment keeps a
// shared fcntl lock on the first byte of the lock file. Such a file is in use and not
// ours to check or move.
bool cache_open_elsewhere(const std::string& path);

// Renames `path` and its lock file to PATH.corrupt-<now> (with -2, -3 ... if that name
// is taken). Returns the new name of the cache file, or nullopt with `error` set.
std::optional<std::string> move_cache_aside(const std::string& path, int64_t now, std::string& error);

}  // namespace smtpscreen
