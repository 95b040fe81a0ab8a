#pragma once
// The main thread's job while the workers run: a progress line on stderr once a
// second, and SIGINT/SIGTERM turned into an orderly end of the run.
#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "bench/progress.h"
#include "core/uv_handle.h"

namespace smtpload {

class ProgressReporter {
public:
    ProgressReporter(Progress& progress, const std::atomic<int>& workers_running, bool quiet);
    ~ProgressReporter();
    ProgressReporter(const ProgressReporter&) = delete;
    ProgressReporter& operator=(const ProgressReporter&) = delete;

    void run();  // returns once no worker is running

private:
    void on_tick();
    void on_signal(int signum);
    void print_line(bool final_line);

    uv_loop_t loop_{};
    Progress& progress_;
    const std::atomic<int>& workers_running_;
    const bool quiet_;
    const bool tty_;
    const std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_print_;
    uint64_t last_done_ = 0;
    int signals_ = 0;
    smtpscreen::UvHandle<uv_timer_t> tick_;
    smtpscreen::UvHandle<uv_signal_t> sigint_;
    smtpscreen::UvHandle<uv_signal_t> sigterm_;
};

}  // namespace smtpload
