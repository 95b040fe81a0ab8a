#include "screen/test_results.h"

namespace smtpscreen {

std::string_view test_name(Test t) {
    // These names appear in logs and in the cache's record layout documentation; keep
    // them stable (the cache stores results by index, not by name).
    switch (t) {
        case Test::Pregreet: return "pregreet";
        case Test::Dnsbl: return "dnsbl";
        case Test::Pipelining: return "pipelining";
        case Test::NonSmtp: return "non_smtp";
        case Test::BareNewline: return "bare_newline";
        case Test::Greylist: return "greylist";
        case Test::Count: break;
    }
    return "unknown";
}

}  // namespace smtpscreen
