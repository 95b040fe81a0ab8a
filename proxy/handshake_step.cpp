#include "proxy/handshake_step.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <utility>

#include "config/config.h"
#include "proxy/handshake_queue.h"

namespace smtpscreen {

HandshakeStep* HandshakeStep::start(HandshakeQueue& queue, std::shared_ptr<TlsStream> stream, int nice, Done done) {
    // The loop writes the step's flight and frees it. Had the pool thread grown the
    // buffer, the chunk would belong to that thread's glibc arena, and the loop's free()
    // would take the arena's lock, which the thread holds through much of its bignum
    // work: a loop stalled up to a scheduler slice behind a preempted handshake thread
    // (perf on the loop's futex calls under a STARTTLS flood; docs/design.md, "TLS").
    // A server's flight after a key exchange is well under 4 KiB (ServerKeyExchange with
    // an RSA-4096 signature: about 600 bytes; NewSessionTicket, ChangeCipherSpec and
    // Finished: about 300).
    stream->reserve_ciphertext(kFlightRoom);
    auto* step = new HandshakeStep(queue, std::move(stream), nice, std::move(done));
    if (!queue.submit(step)) {
        delete step;
        return nullptr;
    }
    return step;
}

// On a pool thread: the stream is this thread's alone until finish().
void HandshakeStep::run() {
    // Lowered by the first step this thread runs; after that only looked at (a system
    // call of well under a microsecond, against a step of milliseconds). A thread that
    // cannot be lowered still runs the step.
    const pid_t self = ::gettid();
    if (nice_ == Config::kHandshakeIdle) {
        if (::sched_getscheduler(self) != SCHED_IDLE) {
            const sched_param none{};
            ::sched_setscheduler(self, SCHED_IDLE, &none);
        }
    } else if (nice_ > 0 && ::getpriority(PRIO_PROCESS, static_cast<id_t>(self)) < nice_) {
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(self), nice_);
    }
    result_ = stream_->handshake(TlsStream::Steps::All);
    queue_.hand_back(this);  // the loop's from here on
}

// Back on the loop thread.
void HandshakeStep::finish() {
    std::unique_ptr<HandshakeStep> step(this);
    if (step->done_) {
        Done done = std::move(step->done_);
        const TlsStream::Handshake result = step->result_;
        step.reset();  // the owner's stream pointer keeps the stream
        done(result);
    }
    // Abandoned: the last reference to the stream goes here, on the loop thread.
}

}  // namespace smtpscreen
