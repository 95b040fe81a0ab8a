#include <fmt/format.h>

#include "config/config.h"
#include "config/ini_lines.h"
#include "config/keys.h"

namespace smtpscreen {

std::string print_config(const Config& c) {
    // No file name or date in the header: printing the printed file must give the same text.
    std::string out = "# smtpscreen effective configuration (smtpscreen --print-config)\n";
    std::string_view section;
    for (const auto& key : config_keys()) {
        if (key.section != section) {
            section = key.section;
            out += fmt::format("\n[{}]\n", section);
        }
        std::string value = key.print(c);
        // load_config refuses a value without lines; printed whole, --check names it.
        auto lines = ini_key_lines(key.section, key.name, value);
        out += lines ? *lines : fmt::format("{} = {}\n", key.name, value);
    }
    return out;
}

std::string list_config_keys() {
    std::string out;
    for (const auto& key : config_keys()) {
        out += fmt::format("{}\t{}\t{}\n", key.full_name(), key.default_value(), key.doc);
    }
    return out;
}

}  // namespace smtpscreen
