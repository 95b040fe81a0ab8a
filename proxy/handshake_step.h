#pragma once
// The costly part of a TLS handshake (TlsStream::handshake()) run on the handshake pool
// (proxy/handshake_pool.h), so that the private-key operation and the ECDHE of a full
// handshake (about 5 ms of CPU with mbedTLS 2.28 and RSA-2048) never stall the event
// loop that asked for it, and every core does handshakes even with process.threads = 1
// (docs/design.md, "TLS").
// Only a step with a public-key operation comes here: the loop runs the others itself
// (TlsStream::Steps::Cheap) and queues a step when handshake() answers NeedPool; the
// pool thread then runs that step and every one after it until the handshake needs the
// peer's bytes again (a trip to the pool costs a wake-up and a hand-back either way, so
// the cheap steps that follow ride along). A resumed handshake never comes here.
//
// While the step runs, the stream is the pool thread's: the loop does not touch it (no
// feed, no take, not even a const look), which is the only rule mbedTLS needs for one
// mbedtls_ssl_context (the shared configuration, RNG and ticket keys lock themselves:
// proxy/tls_context.h). The stream's BIO is its own in-memory buffers, so the pool
// thread never touches a socket. When the step returns, its loop's HandshakeQueue calls
// `done` on the loop thread with the result.
//
// The owner may go away while the step runs (a timeout, a client that hung up): it
// calls abandon(), and the stream is freed on the loop thread after the step returns,
// never under the pool thread's feet.
//
// Priority: the pool thread that runs a step first lowers its own nice value to `nice`
// (tls.handshake_nice). The pool's threads compete with the event loops for the cores;
// a handshake is milliseconds of CPU that no timer waits on, a loop's turn is
// microseconds that every session's timers, DNS answers and relays wait on. At a lower
// priority the scheduler gives a loop the core as soon as it has work, and the steps run
// on whatever CPU is left: a STARTTLS flood slows the handshakes, not the screening.
// Linux keeps a nice value per thread (setpriority(2) on a thread id); an unprivileged
// process can only lower it, so a reload to a smaller value reaches only threads that
// have not run a step yet (a restart reaches all). The pool's threads run nothing but
// handshake steps, so nothing else runs at the lowered priority.
//
// tls.handshake_nice = idle puts the thread under SCHED_IDLE instead (sched(7)). A nice
// value is only a smaller share: Linux's EEVDF scheduler (6.6 on) lets the thread on a
// core finish its slice before a waking loop gets it, so every wake-up of a loop can wait
// up to a slice (about a millisecond) behind a step. A SCHED_IDLE thread is preempted at
// once by any other (docs/design.md, "TLS").
#include <functional>
#include <memory>

#include "proxy/handshake_pool.h"
#include "proxy/tls_stream.h"

namespace smtpscreen {

class HandshakeQueue;

class HandshakeStep final : public HandshakePool::Job {
public:
    using Done = std::function<void(TlsStream::Handshake)>;

    // Queues stream->handshake(Steps::All) on the pool through the loop's `queue`, to
    // run at nice value `nice` (0: the pool thread's own; Config::kHandshakeIdle: under
    // SCHED_IDLE). Returns the step, owned by itself until `done` has been called (or,
    // abandoned, until the pool returns); or nullptr when the pool has no thread (then
    // nothing was queued, and the caller runs the step itself).
    static HandshakeStep* start(HandshakeQueue& queue, std::shared_ptr<TlsStream> stream, int nice, Done done);

    // Ciphertext room made before a step goes to the pool (HandshakeStep::start).
    static constexpr std::size_t kFlightRoom = 4096;

    // The owner is gone: `done` is never called, and the step frees the stream once the
    // pool has returned it. The pointer is not to be used after this.
    void abandon() { done_ = nullptr; }

private:
    friend class HandshakeQueue;
    HandshakeStep(HandshakeQueue& queue, std::shared_ptr<TlsStream> stream, int nice, Done done)
        : queue_(queue), stream_(std::move(stream)), nice_(nice), done_(std::move(done)) {}
    void run() override;  // on a pool thread; hands the step back to queue_ at the end
    void finish();        // on the loop thread; frees the step

    HandshakeQueue& queue_;
    HandshakeStep* next_ = nullptr;  // in queue_'s list of steps handed back
    std::shared_ptr<TlsStream> stream_;
    int nice_;
    Done done_;
    TlsStream::Handshake result_ = TlsStream::Handshake::NeedMore;
};

}  // namespace smtpscreen
