#include "core/deadline_timers.h"

#include <utility>

namespace smtpscreen {

void Deadline::start(uint64_t after_ms) { timers_->arm(*this, after_ms); }

void Deadline::start_in_line(uint64_t line, uint64_t at) { timers_->arm_in_line(*this, line, at); }

void Deadline::stop() {
    if (armed()) timers_->disarm(*this);
}

DeadlineTimers::DeadlineTimers(uv_loop_t* loop)
    : loop_(loop), timer_([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this) {}

DeadlineTimers::~DeadlineTimers() {
    // Owners that outlive us must not reach back into the heap or the lines.
    for (Deadline* d : heap_) d->slot_ = Deadline::kUnarmed;
    for (Line& line : lines_) {
        for (Deadline* d : line.waiting) {
            if (d) d->slot_ = Deadline::kUnarmed;
        }
    }
}

void DeadlineTimers::close() {
    timer_.close();
    timer_due_ = UINT64_MAX;
}

void DeadlineTimers::arm(Deadline& d, uint64_t after_ms) {
    if (d.in_line()) take_out(d);
    into_heap(d, uv_now(loop_) + after_ms);
    set_timer();
}

void DeadlineTimers::arm_in_line(Deadline& d, uint64_t key, uint64_t at) {
    uint32_t index = 0;
    Line& line = line_for(key, &index);
    // Asked again for the same time (the session paces itself after every event): it
    // keeps its place.
    if (d.in_line() && d.slot_ == (Deadline::kInLine | index) && d.due_ == at) return;
    if (d.in_line()) take_out(d);
    if (at < line.last_due) {
        into_heap(d, at);
        return set_timer();
    }
    if (d.armed()) take_out(d);
    d.due_ = at;
    d.seq_ = line.first + line.waiting.size();
    d.slot_ = Deadline::kInLine | index;
    line.waiting.push_back(&d);
    line.last_due = at;
    ++in_lines_;
    set_timer();
}

void DeadlineTimers::disarm(Deadline& d) {
    take_out(d);
    set_timer();
}

void DeadlineTimers::take_out(Deadline& d) {
    if (!d.armed()) return;
    if (!d.in_line()) return remove_at(d.slot_);
    Line& line = lines_[d.slot_ & ~Deadline::kInLine];
    line.waiting[d.seq_ - line.first] = nullptr;
    d.slot_ = Deadline::kUnarmed;
    --in_lines_;
    trim_front(line);
}

// Re-armed in the heap: later than before (the common case) or earlier.
void DeadlineTimers::into_heap(Deadline& d, uint64_t due) {
    d.due_ = due;
    d.seq_ = next_seq_++;
    if (d.armed()) {
        sift_down(d.slot_);
        sift_up(d.slot_);
    } else {
        heap_.push_back(&d);
        d.slot_ = static_cast<uint32_t>(heap_.size() - 1);
        sift_up(d.slot_);
    }
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

DeadlineTimers::Line& DeadlineTimers::line_for(uint64_t key, uint32_t* index) {
    for (size_t i = 0; i < lines_.size(); ++i) {
        if (lines_[i].key == key) {
            *index = static_cast<uint32_t>(i);
            return lines_[i];
        }
    }
    lines_.emplace_back();
    lines_.back().key = key;
    *index = static_cast<uint32_t>(lines_.size() - 1);
    return lines_.back();
}

void DeadlineTimers::trim_front(Line& line) {
    while (!line.waiting.empty() && line.waiting.front() == nullptr) {
        line.waiting.pop_front();
        ++line.first;
    }
}

Deadline* DeadlineTimers::first_due() const {
    Deadline* first = heap_.empty() ? nullptr : heap_.front();
    for (const Line& line : lines_) {
        if (line.waiting.empty()) continue;
        Deadline* d = line.waiting.front();
        if (!first || d->due_ < first->due_) first = d;
    }
    return first;
}

// Restarts the uv_timer only when the first deadline changed: arming a later deadline,
// as every session does on each reply, costs no libuv call.
void DeadlineTimers::set_timer(bool after_pass) {
    if (firing_ || !timer_) return;
    // An empty heap has no use for the capacity a burst of clients left behind.
    if (heap_.empty() && heap_.capacity() > 1024) std::vector<Deadline*>().swap(heap_);
    const Deadline* first = first_due();
    if (!first) {
        if (timer_due_ != UINT64_MAX) uv_timer_stop(timer_.get());
        timer_due_ = UINT64_MAX;
        return;
    }
    const uint64_t due = first->due_;
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

// The next deadline of this pass: due by now and armed before the pass began, the
// earliest of the heap's first and the lines' fronts (the heap's first on a tie).
Deadline* DeadlineTimers::next_in_pass(uint64_t now, uint64_t armed_before) const {
    Deadline* next = nullptr;
    if (!heap_.empty() && heap_.front()->due_ <= now && heap_.front()->seq_ < armed_before) next = heap_.front();
    for (const Line& line : lines_) {
        if (line.waiting.empty() || line.first >= line.fire_before) continue;
        Deadline* d = line.waiting.front();
        if (d->due_ <= now && (!next || d->due_ < next->due_)) next = d;
    }
    return next;
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
    for (Line& line : lines_) line.fire_before = line.first + line.waiting.size();
    while (Deadline* d = next_in_pass(now, armed_before)) {
        take_out(*d);
        d->listener_->on_deadline();
    }
    firing_ = false;
    set_timer(/*after_pass=*/true);
}

}  // namespace smtpscreen
