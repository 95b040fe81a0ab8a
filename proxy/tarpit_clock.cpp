#include "proxy/tarpit_clock.h"

#include <algorithm>

namespace smtpscreen {

void TarpitClock::Waiter::cancel() {
    if (!queue_) return;
    (prev_ ? prev_->next_ : queue_->head) = next_;
    (next_ ? next_->prev_ : queue_->tail) = prev_;
    queue_ = nullptr;
    prev_ = next_ = nullptr;
}

// The timer is made at the first schedule: the worker makes its clock before it
// initialises its loop, and a process that tarpits no one needs none.
bool TarpitClock::has_timer() {
    if (timer_ || closed_) return static_cast<bool>(timer_);
    timer_ = UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(loop_, t); }, this);
    // The sessions' sockets keep the loop running; the clock alone must not.
    if (timer_) uv_unref(timer_.handle());
    return static_cast<bool>(timer_);
}

TarpitClock::Queue& TarpitClock::queue_for(uint64_t delay_ms) {
    for (auto& q : queues_) {
        if (q->delay_ms == delay_ms) return *q;
    }
    queues_.push_back(std::make_unique<Queue>());
    queues_.back()->delay_ms = delay_ms;
    return *queues_.back();
}

void TarpitClock::schedule(Waiter& w, uint64_t delay_ms, uint64_t due) {
    w.cancel();
    Queue& q = queue_for(delay_ms);
    Waiter* after = q.tail;
    while (after && after->due_ > due) after = after->prev_;
    w.queue_ = &q;
    w.due_ = due;
    w.prev_ = after;
    w.next_ = after ? after->next_ : q.head;
    (w.next_ ? w.next_->prev_ : q.tail) = &w;
    (after ? after->next_ : q.head) = &w;
    if (!firing_) arm(due);
}

void TarpitClock::arm(uint64_t due) {
    if (due >= armed_for_ || !has_timer()) return;
    const uint64_t now = uv_now(loop_);
    armed_for_ = due;
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<TarpitClock*>(t->data)) self->on_timer();
        },
        due > now ? due - now : 0, 0);
}

void TarpitClock::arm_for_earliest() {
    armed_for_ = UINT64_MAX;
    uint64_t earliest = UINT64_MAX;
    for (auto& q : queues_) {
        if (q->head) earliest = std::min(earliest, q->head->due_);
    }
    if (earliest != UINT64_MAX) arm(earliest);
    else if (timer_) uv_timer_stop(timer_.get());
}

// Every waiter due by now, list by list. A woken session schedules itself again (at
// the tail: one delay on), or ends and leaves; either way the next due one is the
// head again, read afresh.
void TarpitClock::on_timer() {
    const uint64_t now = uv_now(loop_);
    firing_ = true;
    for (size_t i = 0; i < queues_.size(); ++i) {
        while (Waiter* w = queues_[i]->head) {
            if (w->due_ > now) break;
            w->cancel();
            w->wake_(w->owner_);
        }
    }
    firing_ = false;
    arm_for_earliest();
}

}  // namespace smtpscreen
