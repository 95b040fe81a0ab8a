#pragma once
// Greylisting at the edge, postgrey's job done where the connection arrives
// (docs/design.md, "Edge defences"; smtpscreen.ini(5), [greylist]). With deep tests on,
// a client without a cached greylist pass gets "450 4.2.0 Greylisted, try again later"
// at its first RCPT TO for a new (client network, sender, recipient) triplet; a retry
// of the triplet at least greylist.delay after the first attempt and before
// greylist.retry_window has passed since it is let through, and the client's pass is
// then cached for greylist.ttl (postgrey's auto-allowlist), so it is never greylisted
// again while it keeps coming back.
//
// The rule is one pure function (greylist_attempt); the triplets live in a store that
// answers by callback, as the verdict cache does, so that a store every instance
// shares fits without touching sessions. The in-process table holds at most
// greylist.table_size triplets and forgets the least recently used one first: a bot
// that tries a million senders costs that many entries, never more memory.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/address.h"
#include "core/duration.h"
#include "edge/rate_limit.h"

namespace smtpscreen {

// greylist.delay, greylist.retry_window, greylist.ttl, greylist.table_size, and the
// networks of limits.network_prefix.
struct GreylistRules {
    Millis delay{5LL * 60000};
    Millis retry_window{2LL * 86400000};
    Millis ttl{35LL * 86400000};
    NetworkPrefix network_prefix;
    size_t table_size = 100000;
};

// An envelope address as postgrey compares it: the address alone (without a
// deprecated source route "@a,@b:"), in lower case. "<>" (the null sender) is "".
std::string greylist_address(std::string_view address);

// The triplet's key: "<network>:<sender>:<recipient>", the network of the client by
// limits.network_prefix (postgrey's --lookup-by-subnet: a retry from the next
// address of the same pool still counts), e.g. "192.0.2.0/24:a@example.org:b@example.net".
// The sender is also rewritten as postgrey does (edge/greylist_sender.h: SRS, BATV,
// extensions, numbers), so that "list-bounces+1234@" and "list-bounces+1235@" are one.
std::string greylist_triplet(const Endpoint& client, const NetworkPrefix& prefix, std::string_view sender,
                             std::string_view recipient);

// What is kept per triplet; times in Unix milliseconds (the entry outlives restarts
// in a persistent store).
struct GreylistEntry {
    int64_t first_seen_ms = 0;  // the attempt that started the wait
    bool passed = false;        // a retry came within the window
    int64_t expires_ms = 0;     // from then on the triplet is new again
    friend bool operator==(const GreylistEntry&, const GreylistEntry&) = default;
};

enum class GreylistOutcome : uint8_t {
    New,       // a first attempt, or one after the retry window: 450
    TooEarly,  // retried before greylist.delay: 450, the wait still counts from the first attempt
    Retried,   // retried after the delay, within the window: pass
    Known,     // the triplet passed before (within greylist.ttl): pass
    // The store could not tell in time (a shared store that is down or slow): pass this
    // RCPT, as postgrey's users expect when its database fails, but cache no greylist
    // pass, so that the client is greylisted once the store answers again.
    Unanswered,
};
inline bool greylist_refuses(GreylistOutcome outcome) {
    return outcome == GreylistOutcome::New || outcome == GreylistOutcome::TooEarly;
}

struct GreylistStep {
    GreylistOutcome outcome;
    GreylistEntry entry;  // what the store keeps from now on
};
// One attempt of a triplet at now_ms, given what the store had for it (nothing, or an
// expired entry, is a new triplet). Every store applies this one rule.
GreylistStep greylist_attempt(const std::optional<GreylistEntry>& entry, const GreylistRules& rules, int64_t now_ms);

// The triplets of one process, at most `capacity` of them; a new triplet in a full
// table takes the place of the least recently attempted one. No lock, no clock.
class GreylistTable {
public:
    explicit GreylistTable(size_t capacity);
    GreylistTable(const GreylistTable&) = delete;
    GreylistTable& operator=(const GreylistTable&) = delete;

    // `forgotten`, when given, is set to the triplet that made room, if one had to.
    GreylistStep attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms,
                         std::string* forgotten = nullptr);
    // Puts back an entry read from an archive, as the most recently used one
    // (`forgotten` as for attempt).
    void restore(const std::string& triplet, const GreylistEntry& entry, std::string* forgotten = nullptr);
    // A smaller size forgets the least recently attempted triplets beyond it at once
    // (added to `forgotten` when given).
    void set_capacity(size_t capacity, std::vector<std::string>* forgotten = nullptr);
    size_t capacity() const { return capacity_; }
    size_t size() const { return map_.size(); }
    bool contains(const std::string& triplet) const { return map_.count(triplet) != 0; }

private:
    // A seeded hash: the sender and recipient are the client's to choose, and must not
    // let it pick keys that share a bucket.
    struct KeyHash {
        uint64_t seed;
        size_t operator()(const std::string& key) const noexcept;
    };
    struct Slot {
        GreylistEntry entry;
        std::list<const std::string*>::iterator recency;  // its place in recency_
    };
    using Map = std::unordered_map<std::string, Slot, KeyHash>;

    void forget_oldest(std::string* forgotten = nullptr);
    Slot& insert(const std::string& triplet, const GreylistEntry& entry, std::string* forgotten);

    size_t capacity_;
    Map map_;
    // The keys of map_ (pointers into its nodes, which do not move), least recently
    // attempted first.
    std::list<const std::string*> recency_;
};

// Where triplets are kept. `done` runs exactly once, inline or later from the loop; a
// store that asks over the network must answer within a bounded time, with Unanswered
// when it cannot tell (greylisting is a delay, never a verdict): in this process's
// memory (SharedGreylistTable), or in the Redis several instances share
// (cache/redis_greylist.h), one per loop (VerdictCache::loop_greylist).
class GreylistStore {
public:
    using Done = std::function<void(GreylistOutcome)>;
    virtual ~GreylistStore() = default;
    // One attempt of `triplet` (greylist_triplet) at now_ms, Unix milliseconds.
    virtual void attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms, Done done) = 0;
    // Triplets kept in this process's memory now, for the metrics. Any thread.
    virtual size_t entries_in_memory() const { return 0; }
};

// Where the triplets of a table outlive the process (the lmdb cache's file): the table
// stays the index, bounded as ever, and tells the archive each change, so the archive
// never holds more triplets than the table. Called under the table's lock, from any
// loop thread; failures are the archive's to log.
class GreylistArchive {
public:
    using Visitor = std::function<void(const std::string& triplet, const GreylistEntry& entry)>;
    virtual ~GreylistArchive() = default;
    virtual void load_triplets(const Visitor& visit) = 0;
    virtual void keep_triplet(const std::string& triplet, const GreylistEntry& entry) = 0;
    virtual void forget_triplet(const std::string& triplet) = 0;
};

// One table in this process, shared by every loop thread (a client's retry may land on
// any of them with SO_REUSEPORT). Without an archive it is lost at exit; with one, the
// table is read back from it at its first attempt, most recently used last.
class SharedGreylistTable final : public GreylistStore {
public:
    explicit SharedGreylistTable(std::shared_ptr<GreylistArchive> archive = nullptr) : archive_(std::move(archive)) {}
    void attempt(const std::string& triplet, const GreylistRules& rules, int64_t now_ms, Done done) override;
    size_t entries_in_memory() const override;

    GreylistStep attempt_now(const std::string& triplet, const GreylistRules& rules, int64_t now_ms);

private:
    void load_archive(int64_t now_ms);

    std::shared_ptr<GreylistArchive> archive_;
    mutable std::mutex mutex_;
    std::unique_ptr<GreylistTable> table_;  // made at the first attempt: no memory while greylisting is off
};

}  // namespace smtpscreen
