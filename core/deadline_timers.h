#pragma once
// Every session's deadline on one libuv timer per loop (docs/design.md, "Memory per
// connection"). A uv_timer_t per session costs 152 bytes and a heap allocation for
// each of tens of thousands of idle clients; here a session holds a Deadline (40
// bytes, no allocation) and the loop's DeadlineTimers keeps the armed ones in a binary
// heap ordered by when they are due, with the one uv_timer set for the first of them.
// Deadlines due at the same millisecond fire in the order they were armed, as libuv's
// own timers do.
//
// Owners that re-arm one fixed delay at a time (a tarpitted session's next octet,
// tarpit.delay after its last) arm in a line instead: the deadlines of a line fall due
// in the order they were armed, so a FIFO keeps them sorted at O(1) an arming, where
// the heap costs O(log n) an arming and a removal for each octet of thousands of
// clients (profiled with 10,000 tarpitted clients: re-arming a timer heap at every
// octet was half of smtpscreen's own share of the tarpit's CPU,
// bench/results/tarpit-cost.txt). It costs the session nothing more than its Deadline.
#include <uv.h>

#include <cstdint>
#include <deque>
#include <vector>

#include "core/uv_handle.h"

namespace smtpscreen {

class DeadlineTimers;

class DeadlineListener {
public:
    virtual void on_deadline() = 0;

protected:
    ~DeadlineListener() = default;
};

// One owner's deadline: armed by start, disarmed by stop, by firing or by its destruction.
class Deadline {
public:
    Deadline(DeadlineTimers& timers, DeadlineListener& listener) : timers_(&timers), listener_(&listener) {}
    ~Deadline() { stop(); }
    Deadline(const Deadline&) = delete;
    Deadline& operator=(const Deadline&) = delete;

    // Due `after_ms` from the loop's now (uv_now); replaces any earlier arming.
    void start(uint64_t after_ms);
    // Due at `at` (uv_now's clock), in the line `line` (any number the owners of a line
    // agree on: the tarpit's is its delay); replaces any earlier arming. A deadline
    // that would fall due before the last one armed in its line goes to the heap
    // instead: the order never depends on the callers.
    void start_in_line(uint64_t line, uint64_t at);
    void stop();
    bool armed() const { return slot_ != kUnarmed; }

private:
    friend class DeadlineTimers;
    static constexpr uint32_t kUnarmed = UINT32_MAX;
    static constexpr uint32_t kInLine = 1u << 31;  // slot_: kInLine | the line's index
    bool in_line() const { return armed() && (slot_ & kInLine) != 0; }

    DeadlineTimers* timers_;
    DeadlineListener* listener_;
    uint64_t due_ = 0;  // uv_now() milliseconds
    uint64_t seq_ = 0;  // in the heap: arming order, for ties; in a line: its place in it
    uint32_t slot_ = kUnarmed;  // index in the heap, or kInLine | the line's index
};

class DeadlineTimers {
public:
    explicit DeadlineTimers(uv_loop_t* loop);
    ~DeadlineTimers();
    DeadlineTimers(const DeadlineTimers&) = delete;
    DeadlineTimers& operator=(const DeadlineTimers&) = delete;

    // Closes the uv_timer so that the loop can end; deadlines still armed never fire.
    void close();
    size_t armed() const { return heap_.size() + in_lines_; }

private:
    friend class Deadline;
    // One per line in use: one for the tarpit, unless a reload changed tarpit.delay
    // while clients were held at the old one. A stopped deadline leaves a hole (null)
    // where it was, taken out when it reaches the front: the front is never a hole.
    struct Line {
        uint64_t key = 0;
        std::deque<Deadline*> waiting;
        uint64_t first = 0;        // the place of waiting.front()
        uint64_t last_due = 0;     // of the last deadline put at the back
        uint64_t fire_before = 0;  // during a pass: the places armed before it began
    };

    void arm(Deadline& d, uint64_t after_ms);
    void arm_in_line(Deadline& d, uint64_t line, uint64_t at);
    void disarm(Deadline& d);
    void take_out(Deadline& d);  // from the heap or its line, without touching the timer
    static bool earlier(const Deadline* a, const Deadline* b) {
        return a->due_ != b->due_ ? a->due_ < b->due_ : a->seq_ < b->seq_;
    }
    void into_heap(Deadline& d, uint64_t due);  // d is in no line
    void place(Deadline* d, size_t slot);
    void sift_up(size_t slot);
    void sift_down(size_t slot);
    void remove_at(size_t slot);
    Line& line_for(uint64_t key, uint32_t* index);
    static void trim_front(Line& line);
    // The first deadline due, from the heap and the lines; null when none is armed.
    Deadline* first_due() const;
    Deadline* next_in_pass(uint64_t now, uint64_t armed_before) const;
    void set_timer(bool after_pass = false);
    void fire_due();

    uv_loop_t* loop_;
    UvHandle<uv_timer_t> timer_;
    std::vector<Deadline*> heap_;
    std::vector<Line> lines_;
    size_t in_lines_ = 0;  // deadlines armed in the lines (not the holes)
    uint64_t next_seq_ = 0;
    uint64_t timer_due_ = UINT64_MAX;  // when the uv_timer fires; UINT64_MAX: stopped
    bool firing_ = false;              // set_timer waits for the end of fire_due
};

}  // namespace smtpscreen
