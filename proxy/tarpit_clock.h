#pragma once
// One timer per loop for the next octet of every tarpitted session (docs/design.md,
// "Edge defences"). A session's next octet is due one tarpit.delay after the tick that
// wrote its last (on Stutter's grid), so for one delay the due times come in the order
// the sessions ask for them: a list per delay, appended at its tail and taken from its
// head, stays sorted without a heap. libuv's timer heap then holds one timer for all of
// them, not one per session re-armed at every octet (profiled with 10,000 tarpitted
// clients: the heap's inserts and removals were half of smtpscreen's own share of the
// tarpit's CPU, bench/results/tarpit-cost.txt).
//
// A session's time limit is not kept here: its due time moves with the client, not in
// the order of the list. The session's own timer keeps it, armed once per reply.
#include <uv.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/uv_handle.h"

namespace smtpscreen {

class TarpitClock {
public:
    struct Queue;

    // What a session keeps while its octet is due: in one list at a time, out of it
    // once woken, cancelled or destroyed.
    class Waiter {
    public:
        using Wake = void (*)(void* owner);
        Waiter(Wake wake, void* owner) : wake_(wake), owner_(owner) {}
        ~Waiter() { cancel(); }
        Waiter(const Waiter&) = delete;
        Waiter& operator=(const Waiter&) = delete;

        void cancel();
        bool waiting() const { return queue_ != nullptr; }

    private:
        friend class TarpitClock;
        Wake wake_;
        void* owner_;
        Queue* queue_ = nullptr;
        Waiter* prev_ = nullptr;
        Waiter* next_ = nullptr;
        uint64_t due_ = 0;
    };

    struct Queue {
        uint64_t delay_ms = 0;
        Waiter* head = nullptr;
        Waiter* tail = nullptr;
    };

    explicit TarpitClock(uv_loop_t* loop) : loop_(loop) {}
    TarpitClock(const TarpitClock&) = delete;
    TarpitClock& operator=(const TarpitClock&) = delete;

    // Wakes `w` at `due` (uv_now's clock), in the list of delay_ms. A due time earlier
    // than the list's last is put in its place (a walk back from the tail), so the
    // order never depends on the callers.
    void schedule(Waiter& w, uint64_t delay_ms, uint64_t due);
    // The loop is closing: the timer goes; waiters may still cancel.
    void close() {
        closed_ = true;
        timer_.close();
    }

private:
    bool has_timer();
    Queue& queue_for(uint64_t delay_ms);
    void on_timer();
    void arm(uint64_t due);
    void arm_for_earliest();

    uv_loop_t* loop_;
    // One per delay in use: one, unless a reload changed tarpit.delay while clients
    // were held at the old one.
    std::vector<std::unique_ptr<Queue>> queues_;
    UvHandle<uv_timer_t> timer_;
    uint64_t armed_for_ = UINT64_MAX;  // UINT64_MAX: not armed
    bool firing_ = false;
    bool closed_ = false;
};

}  // namespace smtpscreen
