#pragma once
// The threads that run TLS handshake steps (proxy/handshake_step.h) for every event
// loop of the process: one per CPU the process may run on unless tls.handshake_threads
// says otherwise, started with the first step (a process that never sees a STARTTLS
// has none).
//
// smtpscreen's own threads, not libuv's pool: libuv 1.44 (Debian 12) hands finished
// work back to the loop with uv_async_send, and its loop spins (uv__async_io) while a
// sending thread is between marking the handle and writing to the loop's eventfd. A
// handshake thread below the loops' priority (tls.handshake_nice) preempted there kept
// the loop spinning for it: 40 % of the loop's CPU under a STARTTLS flood. Here a step
// goes back through its loop's HandshakeQueue, where the loop never waits for a thread
// (docs/design.md, "TLS").
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace smtpscreen {

class HandshakePool {
public:
    // What the threads run: a handshake step (proxy/handshake_step.h), or a TLS session's
    // keys to free where they were allocated (HandshakeQueue::free_on_pool).
    class Job {
    public:
        // On a pool thread. The job is the thread's from here: it frees itself, or hands
        // itself back to its loop.
        virtual void run() = 0;

    protected:
        ~Job() = default;
    };

    // threads 0: one per CPU this process may run on (sched_getaffinity(2)).
    explicit HandshakePool(int threads);
    // Runs what is queued, then joins the threads. The loops have waited for their
    // steps before (HandshakeQueue::close), so nothing is queued by then.
    ~HandshakePool();
    HandshakePool(const HandshakePool&) = delete;
    HandshakePool& operator=(const HandshakePool&) = delete;

    // From a loop thread: `job` runs on one of the threads, first come first served.
    // False when no thread could be started (the caller then does the work itself).
    bool run(Job* job);
    int size() const { return size_; }

private:
    void start_threads();  // under mutex_
    void serve();

    const int size_;
    std::mutex mutex_;
    std::condition_variable work_;
    std::deque<Job*> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace smtpscreen
