#pragma once
// Shared by the fuzz targets that load an INI: load_config takes a path, so the text is
// written to one temporary file per process (made on first use, overwritten for every
// input, removed at exit).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace smtpscreen::fuzz {

class ConfigFile {
public:
    ConfigFile() {
        const char* dir = std::getenv("TMPDIR");
        path_ = std::string(dir && *dir ? dir : "/tmp") + "/smtpscreen-fuzz-config-XXXXXX";
        const int fd = ::mkstemp(path_.data());
        if (fd < 0) die("mkstemp");
        ::close(fd);
    }
    ~ConfigFile() { ::unlink(path_.c_str()); }
    ConfigFile(const ConfigFile&) = delete;
    ConfigFile& operator=(const ConfigFile&) = delete;

    std::shared_ptr<const Config> load(std::string_view text, std::vector<std::string>& errors) {
        write(text);
        return load_config(path_, errors);
    }

private:
    void write(std::string_view text) {
        const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) die("open");
        while (!text.empty()) {
            const ssize_t n = ::write(fd, text.data(), text.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) die("write");
            text.remove_prefix(static_cast<size_t>(n));
        }
        ::close(fd);
    }

    [[noreturn]] void die(const char* what) const {
        std::fprintf(stderr, "fuzz: %s %s: %s\n", what, path_.c_str(), std::strerror(errno));
        std::abort();
    }

    std::string path_;
};

// The process's file: a static, destroyed (and unlinked) at exit.
inline std::shared_ptr<const Config> load_config_text(std::string_view text, std::vector<std::string>& errors) {
    static ConfigFile file;
    return file.load(text, errors);
}

inline std::string joined(const std::vector<std::string>& errors) {
    std::string out;
    for (const auto& e : errors) out += "\n    " + e;
    return out;
}

}  // namespace smtpscreen::fuzz
