#pragma once
// Where passes are remembered across connections and restarts. The interface is
// asynchronous so that a networked backend (Redis) fits without touching sessions;
// the embedded backends answer inline.
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/log.h"
#include "screen/test_results.h"

namespace smtpscreen {

class VerdictCache {
public:
    using LookupDone = std::function<void(std::optional<TestResults>)>;
    virtual ~VerdictCache() = default;

    // Key is the client IP as text. `done` may run inline (embedded backends) or later
    // from the loop; errors are logged and reported as "no record".
    virtual void lookup(const std::string& client_ip, LookupDone done) = 0;
    // Fire and forget; a failure is logged, never surfaced to the session.
    virtual void store(const std::string& client_ip, const TestResults& results) = 0;
};

// Embedded backends are safe to share between loop threads. Throws std::runtime_error
// with a sentence naming the file and what to do when the backend cannot be opened.
std::shared_ptr<VerdictCache> open_lmdb_cache(const std::string& path, Logger& log);
std::shared_ptr<VerdictCache> open_memory_cache();

}  // namespace smtpscreen
