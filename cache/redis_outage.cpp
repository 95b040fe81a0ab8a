#include "cache/redis_outage.h"

#include <string_view>

namespace smtpscreen {

void RedisOutage::loop_down(const std::string& why) {
    std::lock_guard lock(mutex_);
    if (loops_down_++ == 0) {
        log_.warn("cache: Redis at {} unreachable: {}; sessions carry on as cache misses, and connection rates "
                  "and failures toward ban.after are counted by this instance alone", where_, why);
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
    switch (what) {
    case Refused::Lookups:
        log_.warn("cache: Redis at {} refuses lookups: {}; sessions carry on as cache misses", where_, why);
        break;
    case Refused::Stores:
        log_.warn("cache: Redis at {} refuses stores: {}; passes are not remembered until it takes them again",
                  where_, why);
        break;
    case Refused::Greylist:
        log_.warn("cache: Redis at {} cannot answer greylisting: {}; RCPTs pass without greylisting until it "
                  "answers again", where_, why);
        break;
    case Refused::RateCounts:
        log_.warn("cache: Redis at {} refuses rate counts: {}; connection rates are counted by this instance alone "
                  "until it takes them again", where_, why);
        break;
    case Refused::FailureCounts:
        log_.warn("cache: Redis at {} refuses failure counts: {}; failures toward ban.after are counted by this "
                  "instance alone until it takes them again", where_, why);
        break;
    }
}

void RedisOutage::accepted(Refused what) {
    auto& flag = refusing_[static_cast<size_t>(what)];
    if (!flag.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mutex_);
    if (!flag.exchange(false)) return;
    constexpr std::array<std::string_view, 5> kAgain{"answers lookups", "takes stores", "takes rate counts",
                                                     "answers greylisting", "takes failure counts"};
    log_.info("cache: Redis at {} {} again", where_, kAgain[static_cast<size_t>(what)]);
}

}  // namespace smtpscreen
