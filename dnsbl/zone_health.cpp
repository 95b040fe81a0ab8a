#include "dnsbl/zone_health.h"

namespace smtpscreen {

bool ZoneHealth::answered(uint64_t now) {
    const bool was_skipped = skip_until_ != 0;
    silent_timeouts_ = 0;
    skip_until_ = 0;
    ever_answered_ = true;
    last_answer_ = now;
    return was_skipped;
}

bool ZoneHealth::timed_out(uint64_t sent, uint64_t now) {
    // An answer in the same millisecond as the send (uv_now() is per loop iteration)
    // may have come after it: give the zone the benefit of the doubt.
    if (ever_answered_ && sent <= last_answer_) return false;
    ++silent_timeouts_;
    // After a skip period, one more such timeout skips again: the zone has had its chance.
    if (silent_timeouts_ < kTimeoutsBeforeSkipping || skipped(now)) return false;
    skip_until_ = now + kSkipMillis;
    return true;
}

}  // namespace smtpscreen
