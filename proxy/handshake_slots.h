#pragma once
// tls.max_pending_handshakes: the client handshakes in progress (from our 220 to a
// client's STARTTLS until the handshake is done or failed), counted across every loop
// thread, since all of them queue their steps on the one thread pool. Beyond the bound a
// STARTTLS is answered "454 4.7.0 TLS not available due to temporary reason" and the
// session goes on in plain text, as Postfix's smtpd does when it cannot start TLS: what
// a flood of handshakes may hold (a stream of ~40 KiB each, and queued work) stays
// bounded, and the clients beyond it still deliver.
#include <atomic>
#include <utility>

namespace smtpscreen {

class HandshakeSlots {
public:
    // One slot taken; given back when destroyed (or reset).
    class Slot {
    public:
        Slot() = default;
        ~Slot() { reset(); }
        Slot(Slot&& other) noexcept : slots_(std::exchange(other.slots_, nullptr)) {}
        Slot& operator=(Slot&& other) noexcept {
            if (this != &other) {
                reset();
                slots_ = std::exchange(other.slots_, nullptr);
            }
            return *this;
        }
        Slot(const Slot&) = delete;
        Slot& operator=(const Slot&) = delete;
        explicit operator bool() const { return slots_ != nullptr; }
        void reset() {
            if (slots_) slots_->taken_.fetch_sub(1, std::memory_order_relaxed);
            slots_ = nullptr;
        }

    private:
        friend class HandshakeSlots;
        explicit Slot(HandshakeSlots* slots) : slots_(slots) {}
        HandshakeSlots* slots_ = nullptr;
    };

    // A slot when fewer than `limit` are taken (the limit of the session's own
    // configuration: a reload changes it for new sessions), an empty Slot otherwise.
    Slot take(int limit) {
        int now = taken_.load(std::memory_order_relaxed);
        while (now < limit) {
            if (taken_.compare_exchange_weak(now, now + 1, std::memory_order_relaxed)) return Slot(this);
        }
        return Slot();
    }
    int taken() const { return taken_.load(std::memory_order_relaxed); }

private:
    std::atomic<int> taken_{0};
};

}  // namespace smtpscreen
