#pragma once
// Where bans are kept (ban.after, ban.time; docs/design.md, "Edge defences"): in the
// same place as the verdicts, so that they survive a restart with an lmdb cache and are
// seen by every instance with Redis. Asynchronous like VerdictCache, for the same
// reason: a networked store answers later, the embedded ones inline.
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "edge/ban.h"
#include "edge/failure_counts.h"

namespace smtpscreen {

class BanStore {
public:
    using BanFound = std::function<void(std::optional<Ban>)>;
    using BanVisitor = std::function<void(const std::string& client_ip, const Ban& ban)>;
    virtual ~BanStore() = default;

    // The client's ban record, in force or only remembered (Ban::keep_until_ms); nullopt
    // when there is none, or the store cannot tell (an outage: the client is let in).
    virtual void lookup_ban(const std::string& client_ip, BanFound done) = 0;
    // Fire and forget, as VerdictCache::store; the record may be dropped once
    // ban.keep_until_ms has passed.
    virtual void store_ban(const std::string& client_ip, const Ban& ban) = 0;

    // For `smtpscreen cache` (README, "Cache tools"): every ban record, and lifting one
    // (its memory of repeats goes too). Only stores another process can open have them.
    virtual void for_each_ban(const BanVisitor& visit) {
        (void)visit;
        throw std::runtime_error("this cache backend's bans cannot be listed from another process");
    }
    virtual bool erase_ban(const std::string& client_ip) {
        (void)client_ip;
        throw std::runtime_error("this cache backend's bans cannot be lifted from another process");
    }

    // A store that several instances share (Redis) counts the failures toward ban.after
    // too, so that a client is banned after N failures on all of them together: the
    // counter of the loop this store belongs to, to be destroyed before it, falling back
    // to `fallback` when the store cannot answer in time. nullptr: `fallback`, this
    // process's table, is where they are counted.
    virtual std::unique_ptr<FailureCounter> loop_failures(FailureCounts& fallback) {
        (void)fallback;
        return nullptr;
    }
};

// cache.backend = memory: at most max_entries records; when full, the one to be
// forgotten soonest goes first. Safe to share between loop threads.
constexpr size_t kMemoryBanMaxEntries = 100'000;
std::shared_ptr<BanStore> open_memory_bans(size_t max_entries = kMemoryBanMaxEntries);

}  // namespace smtpscreen
