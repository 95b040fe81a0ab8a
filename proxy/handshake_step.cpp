#include "proxy/handshake_step.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <utility>

#include "config/config.h"

namespace smtpscreen {

HandshakeStep* HandshakeStep::start(uv_loop_t* loop, std::shared_ptr<TlsStream> stream, int nice, Done done) {
    auto* step = new HandshakeStep(std::move(stream), nice, std::move(done));
    step->req_.data = step;
    if (uv_queue_work(loop, &step->req_, &HandshakeStep::work, &HandshakeStep::after_work) != 0) {
        delete step;
        return nullptr;
    }
    return step;
}

// On a pool thread: the stream is this thread's alone until after_work.
void HandshakeStep::work(uv_work_t* req) {
    auto* step = static_cast<HandshakeStep*>(req->data);
    // Lowered by the first step this thread runs; after that only looked at (a system
    // call of well under a microsecond, against a step of milliseconds). A thread that
    // cannot be lowered still runs the step.
    const pid_t self = ::gettid();
    if (step->nice_ == Config::kHandshakeIdle) {
        if (::sched_getscheduler(self) != SCHED_IDLE) {
            const sched_param none{};
            ::sched_setscheduler(self, SCHED_IDLE, &none);
        }
    } else if (step->nice_ > 0 && ::getpriority(PRIO_PROCESS, static_cast<id_t>(self)) < step->nice_) {
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(self), step->nice_);
    }
    step->result_ = step->stream_->handshake(TlsStream::Steps::All);
}

// Back on the loop thread. status is UV_ECANCELED only for a uv_cancel, which nothing
// calls; the result is whatever the step reached either way.
void HandshakeStep::after_work(uv_work_t* req, int) {
    std::unique_ptr<HandshakeStep> step(static_cast<HandshakeStep*>(req->data));
    if (step->done_) {
        Done done = std::move(step->done_);
        const TlsStream::Handshake result = step->result_;
        step.reset();  // the owner's stream pointer keeps the stream
        done(result);
    }
    // Abandoned: the last reference to the stream goes here, on the loop thread.
}

}  // namespace smtpscreen
