// The bans of cache.backend = memory: they last as long as the process, in bounded memory.
#include <ctime>
#include <chrono>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cache/ban_store.h"

namespace smtpscreen {
namespace {

int64_t unix_now_ms() {
    return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class MemoryBans final : public BanStore {
public:
    explicit MemoryBans(size_t max_entries) : max_entries_(max_entries < 1 ? 1 : max_entries) {}

    void lookup_ban(const std::string& client_ip, BanFound done) override {
        std::optional<Ban> found;
        {
            std::lock_guard lock(mutex_);
            auto it = bans_.find(client_ip);
            if (it != bans_.end()) {
                if (it->second.keep_until_ms <= unix_now_ms()) erase(it);
                else found = it->second;
            }
        }
        done(found);  // outside the lock: the caller may store at once
    }

    void store_ban(const std::string& client_ip, const Ban& ban) override {
        std::lock_guard lock(mutex_);
        if (auto it = bans_.find(client_ip); it != bans_.end()) erase(it);
        while (bans_.size() >= max_entries_) erase(bans_.find(by_forget_.begin()->second));
        bans_.emplace(client_ip, ban);
        by_forget_.emplace(ban.keep_until_ms, client_ip);
    }

    void for_each_ban(const BanVisitor& visit) override {
        std::lock_guard lock(mutex_);
        for (const auto& [ip, ban] : bans_) visit(ip, ban);
    }

    bool erase_ban(const std::string& client_ip) override {
        std::lock_guard lock(mutex_);
        auto it = bans_.find(client_ip);
        if (it == bans_.end()) return false;
        erase(it);
        return true;
    }

private:
    using Map = std::unordered_map<std::string, Ban>;

    void erase(Map::iterator it) {
        auto range = by_forget_.equal_range(it->second.keep_until_ms);
        for (auto f = range.first; f != range.second; ++f) {
            if (f->second == it->first) {
                by_forget_.erase(f);
                break;
            }
        }
        bans_.erase(it);
    }

    const size_t max_entries_;
    std::mutex mutex_;
    Map bans_;
    std::multimap<int64_t, std::string> by_forget_;  // keep_until_ms: the first to go first
};

}  // namespace

std::shared_ptr<BanStore> open_memory_bans(size_t max_entries) { return std::make_shared<MemoryBans>(max_entries); }

}  // namespace smtpscreen
