// Fuzz target: config/from_postconf.h and config/postfix_params.h. The input is what
// `postconf -n` would print (main.cf's lines). Every INI --from-postconf writes must load
// without an error: each value was checked by its key's loader, and the keys' combined
// rules (a DNSBL minimum TTL above the maximum, tls.cert without tls.key) must hold too.
// Table paths (cidr:, the reply map, certificates) name files to read; every '/' of the
// input becomes '_', so that a path can only name a file in the working directory, never
// /proc or a device. Postfix's expansion of the input's parameters stays bounded.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
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
#include "config/from_postconf.h"
#include "config/postfix_params.h"
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
        std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/smtpscreen-fuzz-postconf-XXXXXX";
        const int fd = ::mkstemp(tmpl.data());
        if (fd < 0) {
            std::fprintf(stderr, "fuzz_from_postconf: mkstemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
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
        std::fprintf(stderr, "fuzz_from_postconf: open %s: %s\n", path.c_str(), std::strerror(errno));
        std::abort();
    }
    while (!text.empty()) {
        const ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::fprintf(stderr, "fuzz_from_postconf: write %s: %s\n", path.c_str(), std::strerror(errno));
            std::abort();
        }
        text.remove_prefix(static_cast<size_t>(n));
    }
    ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string in(reinterpret_cast<const char*>(data), size);
    std::replace(in.begin(), in.end(), '/', '_');

    // Every parameter expands within the bounds, whatever refers to what.
    const auto params = PostfixParams::parse(in);
    ParamLookup lookup = [&](std::string_view n) { return params.raw(n); };
    for (const auto& name : params.names()) {
        const std::string value = expand_postfix_value("$" + name, lookup);
        FUZZ_CHECK(value.size() <= 65 * 1024, "expansion of $" + name + " is " + std::to_string(value.size()) +
                                                   " bytes\n  input " + escaped(in, 4000));
        for (const auto& item : split_postfix_list(value)) {
            FUZZ_CHECK(!item.empty(), "an empty list item from " + escaped(value));
        }
    }

    const std::string ini = ini_from_postconf(in);
    write_file(ini);
    std::vector<std::string> errors;
    const auto cfg = load_config(temp_path(), errors);
    std::string joined;
    for (const auto& e : errors) joined += "\n    " + e;
    FUZZ_CHECK(cfg != nullptr && errors.empty(), "the INI --from-postconf wrote does not load:" + joined +
                                                     "\n  input " + escaped(in, 4000) + "\n  INI " +
                                                     escaped(ini, 8000));
    return 0;
}
