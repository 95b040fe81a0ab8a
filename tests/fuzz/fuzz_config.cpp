// Fuzz target: config/config.h. The input is an INI file (tests/fuzz/fuzz_config_file.h
// loads it). Errors are expected; crashes and undefined behaviour are not. A file that
// loads cleanly must survive print_config: the printed text loads without errors to an
// equal Config, and printing that gives the same text (--check accepts what
// --print-config prints, and --print-config is a fixed point).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "tests/fuzz/fuzz_config_file.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;
using fuzz::joined;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    std::vector<std::string> errors;
    const auto cfg = fuzz::load_config_text(in, errors);
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
    std::vector<std::string> errors2;
    const auto again = fuzz::load_config_text(printed, errors2);
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
