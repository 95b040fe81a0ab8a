#include "cache/cache_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace smtpscreen {

std::string lmdb_lock_path(const std::string& path) { return path + "-lock"; }

void create_cache_directory(const std::string& path) {
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    if (dir.empty()) return;
    if (::mkdir(dir.c_str(), 0700) == 0) ::chmod(dir.c_str(), 0700);  // the umask may have taken bits away
}

void make_owner_only(const std::string& path) { ::chmod(path.c_str(), 0600); }

bool cache_open_elsewhere(const std::string& path) {
    const int fd = ::open(lmdb_lock_path(path).c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    struct flock lk {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = 0;
    lk.l_len = 1;
    const bool busy = ::fcntl(fd, F_SETLK, &lk) != 0 && (errno == EACCES || errno == EAGAIN);
    ::close(fd);  // drops the probe's lock; no environment of this process is open yet
    return busy;
}

std::optional<std::string> move_cache_aside(const std::string& path, int64_t now, std::string& error) {
    std::string target = path + ".corrupt-" + std::to_string(now);
    struct stat st {};
    for (int n = 2; ::lstat(target.c_str(), &st) == 0 && n < 100; ++n) {
        target = path + ".corrupt-" + std::to_string(now) + "-" + std::to_string(n);
    }
    if (::rename(path.c_str(), target.c_str()) != 0) {
        error = std::strerror(errno);
        return std::nullopt;
    }
    // The lock file holds no data, only reader slots; it goes with the file so that
    // LMDB starts the new one from a clean lock table.
    ::rename(lmdb_lock_path(path).c_str(), lmdb_lock_path(target).c_str());
    return target;
}

}  // namespace smtpscreen
