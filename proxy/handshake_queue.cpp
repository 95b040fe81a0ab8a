#include "proxy/handshake_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "proxy/handshake_pool.h"
#include "proxy/handshake_step.h"

namespace smtpscreen {

HandshakeQueue::HandshakeQueue(uv_loop_t* loop, HandshakePool& pool) : pool_(pool) {
    eventfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (eventfd_ < 0) {
        throw std::runtime_error(
            fmt::format("cannot make the TLS handshake threads' eventfd: {}", std::strerror(errno)));
    }
    poll_ = UvHandle<uv_poll_t>([&](uv_poll_t* p) { return uv_poll_init(loop, p, eventfd_); }, this);
    if (!poll_) {
        ::close(eventfd_);
        throw std::runtime_error("cannot poll the TLS handshake threads' eventfd");
    }
    uv_poll_start(poll_.get(), UV_READABLE, [](uv_poll_t* p, int, int) {
        if (auto* self = static_cast<HandshakeQueue*>(p->data)) self->take_returned();
    });
    uv_unref(poll_.handle());  // only a step out keeps the loop alive
}

HandshakeQueue::~HandshakeQueue() {
    poll_.close();  // stops polling at once; the descriptor can go now
    // Every step is back, but the thread that handed back the last one may not have
    // written its wake-up yet: the descriptor must not close (and be reused) under it.
    // A wait of a few instructions, once, when the loop ends.
    while (handing_back_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    ::close(eventfd_);
}

bool HandshakeQueue::submit(HandshakeStep* step) {
    if (!pool_.run(step)) return false;
    if (out_++ == 0) uv_ref(poll_.handle());
    return true;
}

namespace {

// Frees its keys on the pool thread that runs it, and itself with them.
class KeysRelease final : public HandshakePool::Job {
public:
    explicit KeysRelease(TlsStream::Keys keys) : keys_(std::move(keys)) {}
    void run() override { delete this; }

private:
    ~KeysRelease() = default;
    TlsStream::Keys keys_;
};

}  // namespace

void HandshakeQueue::free_on_pool(TlsStream::Keys keys) {
    if (!keys) return;
    auto* job = new KeysRelease(std::move(keys));
    if (!pool_.run(job)) job->run();
}

void HandshakeQueue::hand_back(HandshakeStep* step) {
    handing_back_.fetch_add(1, std::memory_order_acq_rel);
    HandshakeStep* head = returned_.load(std::memory_order_relaxed);
    do {
        step->next_ = head;
    } while (!returned_.compare_exchange_weak(head, step, std::memory_order_release, std::memory_order_relaxed));
    // Every step writes: a write the loop does not need costs a spurious wake-up; one
    // skipped because another thread would write could wait on that thread.
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(eventfd_, &one, sizeof one);
    handing_back_.fetch_sub(1, std::memory_order_release);
}

void HandshakeQueue::take_returned() {
    // Reset before taking: a step pushed after the take writes again and wakes the loop.
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = ::read(eventfd_, &count, sizeof count);
    HandshakeStep* list = returned_.exchange(nullptr, std::memory_order_acquire);
    HandshakeStep* in_order = nullptr;  // the list is newest first
    while (list != nullptr) {
        HandshakeStep* next = list->next_;
        list->next_ = in_order;
        in_order = list;
        list = next;
    }
    while (in_order != nullptr) {
        HandshakeStep* step = in_order;
        in_order = step->next_;
        --out_;
        step->finish();  // may submit the session's next step; frees this one
    }
    if (out_ == 0) {
        if (closing_) {
            poll_.close();
        } else {
            uv_unref(poll_.handle());
        }
    }
}

void HandshakeQueue::close() {
    closing_ = true;
    if (out_ == 0) poll_.close();
}

}  // namespace smtpscreen
