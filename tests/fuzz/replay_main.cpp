// main() for the fuzz targets in a build without libFuzzer (the normal g++ build):
// runs LLVMFuzzerTestOneInput once over every file named on the command line or found
// in a directory named there, so the seed corpora (and every crash input kept beside
// them) are replayed by each `meson test`. A broken invariant aborts, as under libFuzzer.
#ifdef SMTPSCREEN_FUZZ_REPLAY

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool replay_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "fuzz replay: cannot read %s\n", path.c_str());
        return false;
    }
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    // Printed before the run, so the input that aborts is the last one named in the log.
    std::printf("  %s (%zu bytes)\n", path.c_str(), bytes.size());
    std::fflush(stdout);
    // A copy of exactly `size` bytes, so that AddressSanitizer sees a read past the end.
    std::vector<uint8_t> exact(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    size_t inputs = 0;
    bool ok = true;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path arg = argv[i];
        std::error_code ec;
        if (std::filesystem::is_directory(arg, ec)) {
            std::vector<std::filesystem::path> files;
            for (const auto& entry : std::filesystem::directory_iterator(arg, ec)) {
                if (entry.is_regular_file()) files.push_back(entry.path());
            }
            std::sort(files.begin(), files.end());
            std::printf("fuzz replay: %zu inputs in %s\n", files.size(), arg.c_str());
            for (const auto& f : files) {
                ok = replay_file(f) && ok;
                ++inputs;
            }
        } else {
            ok = replay_file(arg) && ok;
            ++inputs;
        }
    }
    // No input at all means a wrong path in the test definition, not a pass.
    if (inputs == 0) {
        std::fprintf(stderr, "fuzz replay: no inputs (give corpus directories or files)\n");
        return 1;
    }
    std::printf("fuzz replay: %zu inputs, no invariant broken\n", inputs);
    return ok ? 0 : 1;
}

#endif  // SMTPSCREEN_FUZZ_REPLAY
