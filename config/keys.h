#pragma once
// The one table of configuration keys. A row says where the key lives, what it is
// (one line, for --list-keys and the man page), how a value as written is parsed,
// checked and stored into a Config, and how a Config's value is written back; its
// default is what it writes back for Config{}. Loading, --check, --print-config and
// --list-keys all walk this table, so a key exists in all of them or in none.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "config/load_state.h"

namespace smtpscreen {

struct ConfigKey {
    std::string_view section;
    std::string_view name;
    std::string_view doc;
    std::function<void(KeyContext&, std::string_view)> load;
    std::function<std::string(const Config&)> print;

    std::string full_name() const;
    std::string default_value() const { return print(Config{}); }
};

// In conf/smtpscreen.ini's order, section by section.
const std::vector<ConfigKey>& config_keys();

const ConfigKey* find_config_key(std::string_view section, std::string_view name);
bool known_section(std::string_view section);
// "[listen], [backend], ...", for messages.
std::string section_list();
// "(did you mean greet.wait?)" for a typo or a key put in the wrong section,
// otherwise "(the keys of [greet] are ...)".
std::string unknown_key_hint(std::string_view section, std::string_view name);

}  // namespace smtpscreen
