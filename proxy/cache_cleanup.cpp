#include "proxy/cache_cleanup.h"

#include <ctime>

namespace smtpscreen {
namespace {

// postscreen's cache (Postfix's dict_cache) cleans up once soon after start, then every
// interval: a daemon restarted more often than the interval still gets its cleanups.
constexpr uint64_t kFirstCleanupMs = 1000;

}  // namespace

CacheCleanup::CacheCleanup(uv_loop_t* loop, std::shared_ptr<VerdictCache> cache, std::string name, Millis interval,
                           Logger& log)
    : cache_(std::move(cache)), name_(std::move(name)), interval_(interval), log_(log) {
    timer_ = UvHandle<uv_timer_t>([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this);
    if (interval_.count() > 0) arm(kFirstCleanupMs);
}

void CacheCleanup::arm(uint64_t after_ms) {
    if (!timer_) return;
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<CacheCleanup*>(t->data)) self->on_timer();
        },
        after_ms, 0);
}

void CacheCleanup::set_interval(Millis interval) {
    if (interval == interval_) return;
    interval_ = interval;
    if (running_) return;  // the pass in progress arms the next one when it ends
    if (!timer_) return;
    uv_timer_stop(timer_.get());
    if (interval_.count() > 0) arm(static_cast<uint64_t>(interval_.count()));
}

void CacheCleanup::stop() {
    timer_.close();
    running_.reset();
}

void CacheCleanup::on_timer() {
    if (!running_) running_.emplace();
    cache_->cleanup_step(static_cast<int64_t>(std::time(nullptr)), kLmdbSweepBatch, *running_);
    if (!running_->done) return arm(0);  // the next step after the loop's other events
    log_.info("cache {} full cleanup: retained={} dropped={} entries", name_, running_->retained, running_->dropped);
    running_.reset();
    if (interval_.count() > 0) arm(static_cast<uint64_t>(interval_.count()));
}

}  // namespace smtpscreen
