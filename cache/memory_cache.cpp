// The `memory` cache backend: passes live as long as the process. For tests, and for
// sites that prefer a greet wait after every restart to a file on disk.
#include <algorithm>
#include <ctime>
#include <list>
#include <mutex>
#include <unordered_map>

#include "cache/verdict_cache.h"

namespace smtpscreen {
namespace {

bool all_expired(const TestResults& r, int64_t now) {
    return std::all_of(r.pass_until.begin(), r.pass_until.end(), [now](int64_t t) { return t <= now; });
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

class MemoryCache final : public VerdictCache {
public:
    explicit MemoryCache(size_t max_entries) : max_entries_(std::max<size_t>(max_entries, 1)) {}

    void lookup(const std::string& client_ip, LookupDone done) override {
        std::optional<TestResults> found;
        {
            std::lock_guard lock(mutex_);
            auto it = records_.find(client_ip);
            if (it != records_.end()) {
                // Unlike LMDB, dropping a dead record here costs nothing.
                if (all_expired(it->second.results, unix_now())) {
                    erase(it);
                } else {
                    found = it->second.results;
                }
            }
        }
        // Outside the lock: the callback may well store() straight away.
        done(found);
    }

    void store(const std::string& client_ip, const TestResults& results) override {
        std::lock_guard lock(mutex_);
        auto it = records_.find(client_ip);
        if (it != records_.end()) {
            it->second.results = results;
            age_.splice(age_.end(), age_, it->second.age);
            return;
        }
        if (records_.size() >= max_entries_) make_room(unix_now());
        auto [pos, inserted] = records_.emplace(client_ip, Record{results, {}});
        (void)inserted;
        // Map nodes never move, so the list can point at their keys.
        pos->second.age = age_.insert(age_.end(), &pos->first);
    }

    size_t purge_expired(int64_t now) override {
        std::lock_guard lock(mutex_);
        return purge_locked(now);
    }

private:
    struct Record {
        TestResults results;
        std::list<const std::string*>::iterator age;
    };
    using Map = std::unordered_map<std::string, Record>;

    void erase(Map::iterator it) {
        age_.erase(it->second.age);
        records_.erase(it);
    }

    size_t purge_locked(int64_t now) {
        size_t removed = 0;
        for (auto it = records_.begin(); it != records_.end();) {
            if (all_expired(it->second.results, now)) {
                age_.erase(it->second.age);
                it = records_.erase(it);
                ++removed;
            } else {
                ++it;
            }
        }
        return removed;
    }

    // Full: drop what has expired, then the oldest stored records until 1% is free, so
    // the O(n) sweep runs at most once per 1% of capacity worth of new clients.
    void make_room(int64_t now) {
        purge_locked(now);
        const size_t target = max_entries_ - std::max<size_t>(max_entries_ / 100, 1);
        while (records_.size() > target && !age_.empty()) erase(records_.find(*age_.front()));
    }

    const size_t max_entries_;
    std::mutex mutex_;
    Map records_;
    std::list<const std::string*> age_;  // oldest store first
};

}  // namespace

std::shared_ptr<VerdictCache> open_memory_cache(size_t max_entries) {
    return std::make_shared<MemoryCache>(max_entries);
}

std::shared_ptr<VerdictCache> open_memory_cache() { return open_memory_cache(kMemoryCacheMaxEntries); }

}  // namespace smtpscreen
