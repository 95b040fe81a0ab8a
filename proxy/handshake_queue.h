#pragma once
// One event loop's way to the handshake pool (proxy/handshake_pool.h) and back. A pool
// thread hands a finished step back by pushing it on a lock-free list and writing to an
// eventfd the loop polls: the loop never takes a lock a pool thread holds and never
// spins for one, so a handshake thread that the scheduler preempts (it runs below the
// loops: tls.handshake_nice) delays only its own step, never the loop
// (docs/design.md, "TLS").
//
// The loop stays alive while a step is out (as libuv's uv_queue_work keeps it): a
// session that goes away abandons its step, and the step comes back and is freed here,
// on the loop thread.
#include <uv.h>

#include <atomic>
#include <cstddef>

#include "core/uv_handle.h"
#include "proxy/tls_stream.h"

namespace smtpscreen {

class HandshakePool;
class HandshakeStep;

class HandshakeQueue {
public:
    // Throws std::runtime_error when no eventfd can be made (out of descriptors).
    HandshakeQueue(uv_loop_t* loop, HandshakePool& pool);
    // After close() and the loop's last run: every step is back by then.
    ~HandshakeQueue();
    HandshakeQueue(const HandshakeQueue&) = delete;
    HandshakeQueue& operator=(const HandshakeQueue&) = delete;

    // Loop thread: `step` to the pool. False when the pool has no thread (the caller
    // runs the step itself).
    bool submit(HandshakeStep* step);
    // Loop thread: the keys of a TLS session that is over, freed on a pool thread. A
    // full handshake's keys were allocated by the pool thread that derived them, in that
    // thread's glibc arena; freed on the loop, they would take that arena's lock, which a
    // pool thread holds through much of its bignum work, and the loop would stall behind a
    // preempted handshake thread (docs/design.md, "TLS"). Without a pool thread they are
    // freed here.
    void free_on_pool(TlsStream::Keys keys);
    // Pool thread: `step` has run; the loop finishes it (HandshakeStep::finish).
    void hand_back(HandshakeStep* step);
    // Loop thread, before the loop's last run: the poll handle closes once the steps
    // still out are back, and the loop runs until then.
    void close();
    // Loop thread: steps on the pool now.
    size_t out() const { return out_; }

private:
    void take_returned();

    HandshakePool& pool_;
    int eventfd_ = -1;
    UvHandle<uv_poll_t> poll_;
    std::atomic<HandshakeStep*> returned_{nullptr};  // pushed by pool threads, taken whole by the loop
    std::atomic<int> handing_back_{0};               // pool threads inside hand_back()
    size_t out_ = 0;                                 // loop thread only
    bool closing_ = false;
};

}  // namespace smtpscreen
