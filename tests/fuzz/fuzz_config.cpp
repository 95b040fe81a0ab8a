// Fuzz target: config/config.h. The input is an INI file. load_config takes a path, so the
// input is written to one temporary file per process (made once, overwritten for every
// input). Errors are expected; crashes and undefined behaviour are not. A file that
// loads cleanly must survive print_config: the printed text loads without errors to an
// equal Config, and printing that gives the same text (--check accepts what
// --print-config prints, and --print-config is a fixed point).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;

namespace {

std::string g_path;

void remove_temp_file() {
    if (!g_path.empty()) ::unlink(g_path.c_str());
}

const std::string& temp_path() {
    if (g_path.empty()) {
        const char* dir = std::getenv("TMPDIR");
        std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/smtpscreen-fuzz-config-XXXXXX";
        const int fd = ::mkstemp(tmpl.data());
        if (fd < 0) {
            std::fprintf(stderr, "fuzz_config: mkstemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
            std::abort();
        }
        ::close(fd);
        g_path = tmpl;
        std::atexit(remove_temp_file);
    }
    return g_path;
}

void write_file(std::string_view text) {
    const std::string& path = temp_path();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        std::fprintf(stderr, "fuzz_config: open %s: %s\n", path.c_str(), std::strerror(errno));
        std::abort();
    }
    while (!text.empty()) {
        const ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::fprintf(stderr, "fuzz_config: write %s: %s\n", path.c_str(), std::strerror(errno));
            std::abort();
        }
        text.remove_prefix(static_cast<size_t>(n));
    }
    ::close(fd);
}

std::string joined(const std::vector<std::string>& errors) {
    std::string out;
    for (const auto& e : errors) out += "\n    " + e;
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    write_file(in);

    std::vector<std::string> errors;
    const auto cfg = load_config(temp_path(), errors);
    FUZZ_CHECK(cfg != nullptr, "load_config returned no Config");
    for (const auto& e : errors) {
        // Every error names the file it is about (the INI, or a file a key names).
        FUZZ_CHECK(!e.empty() && e.find('\n') == std::string::npos, "error message " + escaped(e));
    }
    // SMTPSCREEN_FUZZ_VERBOSE=1 says what became of each input: handy when adding a seed
    // that is meant to load cleanly (only those reach the print/reload round trip).
    static const bool verbose = std::getenv("SMTPSCREEN_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "fuzz_config: %zu errors%s\n", errors.size(), joined(errors).c_str());
    if (!errors.empty()) return 0;

    (void)config_warnings(*cfg);
    const std::string printed = print_config(*cfg);
    write_file(printed);
    std::vector<std::string> errors2;
    const auto again = load_config(temp_path(), errors2);
    FUZZ_CHECK(errors2.empty(), "the printed configuration does not load:" + joined(errors2) + "\n  input " +
                                    escaped(in, 4000) + "\n  printed " + escaped(printed, 8000));
    FUZZ_CHECK(*again == *cfg, "the printed configuration loads to a different Config\n  input " +
                                   escaped(in, 4000) + "\n  printed " + escaped(printed, 8000));
    const std::string reprinted = print_config(*again);
    FUZZ_CHECK(reprinted == printed, "printing the printed configuration changes it\n  input " + escaped(in, 4000) +
                                         "\n  printed   " + escaped(printed, 8000) + "\n  reprinted " +
                                         escaped(reprinted, 8000));
    return 0;
}
