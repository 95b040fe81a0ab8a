#include "core/deadline_timers.h"

#include <utility>

namespace smtpscreen {

void Deadline::start(uint64_t after_ms) { timers_->arm(*this, after_ms); }

void Deadline::stop() {
    if (armed()) timers_->disarm(*this);
}

DeadlineTimers::DeadlineTimers(uv_loop_t* loop)
    : loop_(loop), timer_([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this) {}

DeadlineTimers::~DeadlineTimers() {
    // Owners that outlive us must not reach back into the heap.
    for (Deadline* d : heap_) d->slot_ = Deadline::kUnarmed;
}

void DeadlineTimers::close() {
    timer_.close();
    timer_due_ = UINT64_MAX;
}

void DeadlineTimers::arm(Deadline& d, uint64_t after_ms) {
    const uint64_t due = uv_now(loop_) + after_ms;
    d.due_ = due;
    d.seq_ = next_seq_++;
    if (d.armed()) {
        // Re-armed: later than before (the common case) or earlier.
        sift_down(d.slot_);
        sift_up(d.slot_);
    } else {
        heap_.push_back(&d);
        d.slot_ = static_cast<uint32_t>(heap_.size() - 1);
        sift_up(d.slot_);
    }
    set_timer();
}

void DeadlineTimers::disarm(Deadline& d) {
    remove_at(d.slot_);
    set_timer();
}

void DeadlineTimers::place(Deadline* d, size_t slot) {
    heap_[slot] = d;
    d->slot_ = static_cast<uint32_t>(slot);
}

void DeadlineTimers::sift_up(size_t slot) {
    Deadline* d = heap_[slot];
    while (slot > 0) {
        const size_t parent = (slot - 1) / 2;
        if (!earlier(d, heap_[parent])) break;
        place(heap_[parent], slot);
        slot = parent;
    }
    place(d, slot);
}

void DeadlineTimers::sift_down(size_t slot) {
    Deadline* d = heap_[slot];
    const size_t n = heap_.size();
    while (true) {
        size_t child = 2 * slot + 1;
        if (child >= n) break;
        if (child + 1 < n && earlier(heap_[child + 1], heap_[child])) ++child;
        if (!earlier(heap_[child], d)) break;
        place(heap_[child], slot);
        slot = child;
    }
    place(d, slot);
}

void DeadlineTimers::remove_at(size_t slot) {
    Deadline* gone = heap_[slot];
    gone->slot_ = Deadline::kUnarmed;
    Deadline* last = heap_.back();
    heap_.pop_back();
    if (last == gone) return;
    place(last, slot);
    sift_down(slot);
    sift_up(last->slot_);
}

// Restarts the uv_timer only when the first deadline changed: arming a later deadline,
// as every session does on each reply, costs no libuv call.
void DeadlineTimers::set_timer(bool after_pass) {
    if (firing_ || !timer_) return;
    if (heap_.empty()) {
        if (timer_due_ != UINT64_MAX) uv_timer_stop(timer_.get());
        timer_due_ = UINT64_MAX;
        // An empty heap has no use for the capacity a burst of clients left behind.
        if (heap_.capacity() > 1024) std::vector<Deadline*>().swap(heap_);
        return;
    }
    const uint64_t due = heap_.front()->due_;
    if (due == timer_due_) return;
    timer_due_ = due;
    const uint64_t now = uv_now(loop_);
    const uint64_t wait = due > now ? due - now : (after_pass ? 1 : 0);
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<DeadlineTimers*>(t->data)) self->fire_due();
        },
        wait, 0);
}

// Each deadline is disarmed before its owner hears of it, so the owner may arm it again,
// or stop and destroy others (including one due in this same pass). One armed during
// the pass waits for the next turn of the loop, even when it is due at once: a tarpit
// that re-arms with 0 never spins here.
void DeadlineTimers::fire_due() {
    timer_due_ = UINT64_MAX;
    firing_ = true;
    const uint64_t now = uv_now(loop_);
    const uint64_t armed_before = next_seq_;
    while (!heap_.empty() && heap_.front()->due_ <= now && heap_.front()->seq_ < armed_before) {
        Deadline* d = heap_.front();
        remove_at(0);
        d->listener_->on_deadline();
    }
    firing_ = false;
    set_timer(/*after_pass=*/true);
}

}  // namespace smtpscreen
