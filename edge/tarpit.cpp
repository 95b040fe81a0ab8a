#include "edge/tarpit.h"

#include <algorithm>

namespace smtpscreen {

bool TarpitSlots::take(int most) {
    if (in_use_.fetch_add(1, std::memory_order_relaxed) < most) return true;
    in_use_.fetch_sub(1, std::memory_order_relaxed);
    return false;
}

void TarpitSlots::give_back() { in_use_.fetch_sub(1, std::memory_order_relaxed); }

Stutter::Stutter(Millis delay, Millis time_limit, uint64_t now)
    : delay_ms_(static_cast<uint64_t>(std::max<int64_t>(delay.count(), 1))),
      grain_ms_(std::clamp<uint64_t>(delay_ms_ / 16, 1, 64)),
      limit_ms_(static_cast<uint64_t>(std::max<int64_t>(time_limit.count(), 0))),
      deadline_(now + limit_ms_) {}

void Stutter::queue(std::string_view reply, uint64_t now) {
    if (reply.empty()) return;
    if (!giving_out()) {
        reply_.assign(reply);
        sent_ = 0;
        next_byte_at_ = due(now + delay_ms_);
        // Waiting for our byte is no time the client spends on a command.
        deadline_ = std::max(deadline_, next_byte_at_ + limit_ms_);
        return;
    }
    reply_.erase(0, sent_);
    sent_ = 0;
    reply_.append(reply);
}

Stutter::Tick Stutter::tick(uint64_t now, bool backlog) {
    if (now >= deadline_) return {Step::TimeLimit, 0};
    if (!giving_out() || now < next_byte_at_) return {};
    // Never faster than the delay: the next byte is due one delay after this tick,
    // whatever made it late.
    next_byte_at_ = due(now + delay_ms_);
    if (backlog) return {};
    Tick t{Step::Byte, reply_[sent_++]};
    if (giving_out()) {
        // Progress: the limit runs from the next byte, which is ours to send.
        deadline_ = next_byte_at_ + limit_ms_;
    } else {
        deadline_ = now + limit_ms_;  // now the client's turn
        std::string().swap(reply_);   // an idle tarpitted client keeps no reply buffer
        sent_ = 0;
    }
    return t;
}

uint64_t Stutter::wake_at() const { return giving_out() ? std::min(next_byte_at_, deadline_) : deadline_; }

}  // namespace smtpscreen
