#include "edge/tarpit.h"

#include <algorithm>

namespace smtpscreen {

bool TarpitSlots::take(int most) {
    if (in_use_.fetch_add(1, std::memory_order_relaxed) < most) return true;
    in_use_.fetch_sub(1, std::memory_order_relaxed);
    return false;
}

void TarpitSlots::give_back() { in_use_.fetch_sub(1, std::memory_order_relaxed); }

namespace {

uint32_t ms32(Millis d, int64_t least) {
    return static_cast<uint32_t>(std::clamp<int64_t>(d.count(), least, UINT32_MAX));
}

}  // namespace

Stutter::Stutter(Millis delay, Millis time_limit, uint64_t now)
    : deadline_(now + ms32(time_limit, 0)), delay_ms_(ms32(delay, 1)), limit_ms_(ms32(time_limit, 0)) {}

uint64_t Stutter::grain_ms() const { return std::clamp<uint64_t>(delay_ms_ / 16, 1, 64); }

void Stutter::queue(std::string_view reply, uint64_t now) {
    if (reply.empty()) return;
    const bool was_idle = !giving_out();
    append(reply);
    if (was_idle) start(now);
}

void Stutter::queue_lasting(std::string_view reply, uint64_t now) {
    if (reply.empty()) return;
    if (giving_out()) return append(reply);
    copy_.reset();
    reply_ = reply;
    sent_ = 0;
    start(now);
}

// What is left of the reply being given out, then `reply`, in one new copy.
void Stutter::append(std::string_view reply) {
    const std::string_view rest = giving_out() ? reply_.substr(sent_) : std::string_view();
    auto joined = std::make_unique<char[]>(rest.size() + reply.size());
    std::copy(reply.begin(), reply.end(), std::copy(rest.begin(), rest.end(), joined.get()));
    copy_ = std::move(joined);
    reply_ = std::string_view(copy_.get(), rest.size() + reply.size());
    sent_ = 0;
}

// The first byte of a reply, when nothing was being given out.
void Stutter::start(uint64_t now) {
    next_byte_at_ = due(now + delay_ms_);
    // Waiting for our byte is no time the client spends on a command.
    deadline_ = std::max(deadline_, next_byte_at_ + limit_ms_);
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
        copy_.reset();                // an idle tarpitted client keeps no reply
        reply_ = {};
        sent_ = 0;
    }
    return t;
}

uint64_t Stutter::wake_at() const { return giving_out() ? std::min(next_byte_at_, deadline_) : deadline_; }

}  // namespace smtpscreen
