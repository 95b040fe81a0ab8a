// Fuzz target: config/from_postconf.h and config/postfix_params.h. The input is what
// `postconf -n` would print (main.cf's lines). Every INI --from-postconf writes must load
// without an error: each value was checked by its key's loader, and the keys' combined
// rules (a DNSBL minimum TTL above the maximum, tls.cert without tls.key) must hold too.
// Table paths (cidr:, the reply map, certificates) name files to read; every '/' of the
// input becomes '_', so that a path can only name a file in the working directory, never
// /proc or a device. Postfix's expansion of the input's parameters stays bounded.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "config/from_postconf.h"
#include "config/postfix_params.h"
#include "tests/fuzz/fuzz_config_file.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;
using fuzz::joined;

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
    std::vector<std::string> errors;
    const auto cfg = fuzz::load_config_text(ini, errors);
    FUZZ_CHECK(cfg != nullptr && errors.empty(), "the INI --from-postconf wrote does not load:" + joined(errors) +
                                                     "\n  input " + escaped(in, 4000) + "\n  INI " +
                                                     escaped(ini, 8000));
    return 0;
}
