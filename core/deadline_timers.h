#pragma once
// Every session's deadline on one libuv timer per loop (docs/design.md, "Memory per
// connection"). A uv_timer_t per session costs 152 bytes and a heap allocation for
// each of tens of thousands of idle clients; here a session holds a Deadline (40
// bytes, no allocation) and the loop's DeadlineTimers keeps the armed ones in a binary
// heap ordered by when they are due, with the one uv_timer set for the first of them.
// Deadlines due at the same millisecond fire in the order they were armed, as libuv's
// own timers do.
#include <uv.h>

#include <cstdint>
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
    void stop();
    bool armed() const { return slot_ != kUnarmed; }

private:
    friend class DeadlineTimers;
    static constexpr uint32_t kUnarmed = UINT32_MAX;
    DeadlineTimers* timers_;
    DeadlineListener* listener_;
    uint64_t due_ = 0;  // uv_now() milliseconds
    uint64_t seq_ = 0;  // arming order, for ties
    uint32_t slot_ = kUnarmed;  // index in the heap
};

class DeadlineTimers {
public:
    explicit DeadlineTimers(uv_loop_t* loop);
    ~DeadlineTimers();
    DeadlineTimers(const DeadlineTimers&) = delete;
    DeadlineTimers& operator=(const DeadlineTimers&) = delete;

    // Closes the uv_timer so that the loop can end; deadlines still armed never fire.
    void close();
    size_t armed() const { return heap_.size(); }

private:
    friend class Deadline;
    void arm(Deadline& d, uint64_t after_ms);
    void disarm(Deadline& d);
    static bool earlier(const Deadline* a, const Deadline* b) {
        return a->due_ != b->due_ ? a->due_ < b->due_ : a->seq_ < b->seq_;
    }
    void place(Deadline* d, size_t slot);
    void sift_up(size_t slot);
    void sift_down(size_t slot);
    void remove_at(size_t slot);
    void set_timer(bool after_pass = false);
    void fire_due();

    uv_loop_t* loop_;
    UvHandle<uv_timer_t> timer_;
    std::vector<Deadline*> heap_;
    uint64_t next_seq_ = 0;
    uint64_t timer_due_ = UINT64_MAX;  // when the uv_timer fires; UINT64_MAX: stopped
    bool firing_ = false;              // set_timer waits for the end of fire_due
};

}  // namespace smtpscreen
