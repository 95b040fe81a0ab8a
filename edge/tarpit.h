#pragma once
// The tarpit (OpenBSD spamd's stutter; docs/design.md, "Edge defences"): a client that
// failed a test whose action is `tarpit` gets the enforce action's dialog, and every
// reply of it goes out one byte per tarpit.delay. At most tarpit.max_connections
// clients are held so at once per process; the next one is dropped instead.
//
// Plain state, no I/O and no clock: the session gives uv_now, writes the byte it is
// told to write, and wakes its one timer when told to.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

#include "core/duration.h"

namespace smtpscreen {

// tarpit.max_connections, counted across the loops of the process (a bot's connections
// land on any of them with SO_REUSEPORT). One atomic, no lock: the bound is checked
// where the count moves, so no two loops can both take the last slot.
class TarpitSlots {
public:
    // A slot for one more tarpitted client, when fewer than `most` are held now.
    bool take(int most);
    // The client's session ended: its slot is free.
    void give_back();
    int in_use() const { return in_use_.load(std::memory_order_relaxed); }

private:
    std::atomic<int> in_use_{0};
};

// One tarpitted client's output and its clock, small enough to live inside the
// session, in the room it keeps for a handoff the tarpit never makes (proxy/session.h):
// a tarpitted client costs no more than an idle one (docs/design.md, "Memory per
// connection"). The reply being given out is never a buffer or a write request per
// byte: text that outlives the Stutter (the configured greeting, the same for every
// client) is given out from where it is, any other reply from one copy, freed when
// its last byte is out, so a tarpitted client waiting for its next command holds no
// more than an enforced one.
//
// The time limit (limits.command_time_limit) runs from the last sign of progress: a
// byte given out (from when the next one is due), or the first byte of a new command
// line. So a reply longer than the
// limit at this pace still gets out whole, a client that stops taking its replies is
// still closed, and one that takes them and then says nothing is closed as the enforce
// dialog would close it.
class Stutter {
public:
    Stutter(Millis delay, Millis time_limit, uint64_t now);

    // A reply (CRLF-terminated lines) to give out after what is still queued; when
    // nothing is, its first byte goes out one delay from now. It is copied.
    void queue(std::string_view reply, uint64_t now);
    // As queue, for text that outlives this Stutter: when nothing is queued it is given
    // out from where it is, not copied.
    void queue_lasting(std::string_view reply, uint64_t now);
    // The dialog is over once what is queued is out.
    void close_when_done() { closing_ = true; }
    // A new command line started (the dialog's LineStarted).
    void line_started(uint64_t now) { deadline_ = now + limit_ms_; }

    bool giving_out() const { return sent_ < reply_.size(); }
    bool closing() const { return closing_; }

    enum class Step {
        Byte,       // write `byte` now
        Wait,       // nothing to write yet
        TimeLimit,  // the time limit is over: end the session
    };
    struct Tick {
        Step step = Step::Wait;
        char byte = 0;
    };
    // The session's timer fired at `now`. backlog: the client has not taken the last
    // byte yet (it is still queued in user space), so no new one is written on top of it.
    Tick tick(uint64_t now, bool backlog);
    // When the timer must fire next (at or after now).
    uint64_t wake_at() const;
    // The next wake-up is for a byte, not for the time limit: byte wake-ups come one
    // delay apart, in the order they were asked for (a line of the loop's deadlines,
    // core/deadline_timers.h).
    bool byte_next() const { return giving_out() && next_byte_at_ <= deadline_; }
    uint64_t delay_ms() const { return delay_ms_; }

    // Bytes fall due on a grid of delay/16 (1 to 64 ms): the ticks of thousands of
    // tarpitted clients fall on the same few instants, so the loop wakes for a batch of
    // them at once (at most 1000/grain times a second, 16 at the default delay) instead
    // of once per client. A byte is never due sooner than one delay after the last.
    uint64_t grain_ms() const;

private:
    uint64_t due(uint64_t at) const {
        const uint64_t grain = grain_ms();
        return (at + grain - 1) / grain * grain;
    }
    void start(uint64_t now);
    void append(std::string_view reply);

    std::unique_ptr<char[]> copy_;  // what reply_ shows, unless it shows lasting text
    std::string_view reply_;
    uint64_t next_byte_at_ = 0;
    uint64_t deadline_;
    uint32_t sent_ = 0;
    // Milliseconds, 32 bits to keep the Stutter within the session's room: a delay or
    // a time limit beyond 49 days (2^32 ms) is taken as 49 days.
    uint32_t delay_ms_;
    uint32_t limit_ms_;
    bool closing_ = false;
};

}  // namespace smtpscreen
