#include "cache/redis_outage.h"

namespace smtpscreen {

void RedisOutage::loop_down(const std::string& why) {
    std::lock_guard lock(mutex_);
    if (loops_down_++ == 0) {
        log_.warn("cache: Redis at {} unreachable: {}; sessions carry on as cache misses", where_, why);
    }
}

void RedisOutage::loop_up() {
    std::lock_guard lock(mutex_);
    if (loops_down_ > 0 && --loops_down_ == 0) log_.info("cache: Redis at {} is back; sessions use the cache again", where_);
}

void RedisOutage::refused(Refused what, const std::string& why) {
    auto& flag = refusing_[static_cast<size_t>(what)];
    if (flag.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mutex_);
    if (flag.exchange(true)) return;
    if (what == Refused::Lookups) {
        log_.warn("cache: Redis at {} refuses lookups: {}; sessions carry on as cache misses", where_, why);
    } else {
        log_.warn("cache: Redis at {} refuses stores: {}; passes are not remembered until it takes them again",
                  where_, why);
    }
}

void RedisOutage::accepted(Refused what) {
    auto& flag = refusing_[static_cast<size_t>(what)];
    if (!flag.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mutex_);
    if (!flag.exchange(false)) return;
    log_.info("cache: Redis at {} {} again", where_, what == Refused::Lookups ? "answers lookups" : "takes stores");
}

}  // namespace smtpscreen
