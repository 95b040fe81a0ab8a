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

void RedisOutage::store_refused(const std::string& why) {
    std::lock_guard lock(mutex_);
    if (stores_refused_) return;
    stores_refused_ = true;
    log_.warn("cache: Redis at {} refuses stores: {}; passes are not remembered until it takes them again", where_, why);
}

void RedisOutage::store_accepted() {
    if (!stores_refused_.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mutex_);
    if (!stores_refused_) return;
    stores_refused_ = false;
    log_.info("cache: Redis at {} takes stores again", where_);
}

}  // namespace smtpscreen
