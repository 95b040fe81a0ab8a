#include "proxy/handshake_pool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>

namespace smtpscreen {

namespace {

int cpus_allowed() {
    cpu_set_t allowed;
    if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0) return CPU_COUNT(&allowed);
    const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? static_cast<int>(online) : 1;
}

}  // namespace

HandshakePool::HandshakePool(int threads) : size_(threads > 0 ? threads : std::max(1, cpus_allowed())) {}

HandshakePool::~HandshakePool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    work_.notify_all();
    for (std::thread& t : threads_) t.join();
}

bool HandshakePool::run(Job* job) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (threads_.empty()) start_threads();
        if (threads_.empty()) return false;
        jobs_.push_back(job);
    }
    work_.notify_one();
    return true;
}

void HandshakePool::start_threads() {
    // Signals are for the signal loop's thread (proxy/server.cpp); a thread started
    // here inherits the mask of the loop that started it, so every signal is blocked
    // while it is made.
    sigset_t all, before;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &before);
    try {
        for (int i = 0; i < size_; ++i) threads_.emplace_back([this] { serve(); });
    } catch (const std::system_error&) {
        // As many as the system gave (none: the loops run their steps themselves).
    }
    ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

void HandshakePool::serve() {
    ::pthread_setname_np(::pthread_self(), "tls-handshake");  // top -H, ps -L
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        work_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and everything queued has run
        Job* job = jobs_.front();
        jobs_.pop_front();
        lock.unlock();
        job->run();  // the job is gone or back with its loop: not to be touched after
        lock.lock();
    }
}

}  // namespace smtpscreen
