#include "bench/progress_reporter.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace smtpload {
namespace {

constexpr uint64_t kPollMs = 100;  // how soon the end of the workers is noticed

}  // namespace

ProgressReporter::ProgressReporter(Progress& progress, const std::atomic<int>& workers_running, bool quiet)
    : progress_(progress),
      workers_running_(workers_running),
      quiet_(quiet),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {
    uv_loop_init(&loop_);
    tick_ = smtpscreen::UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(&loop_, t); }, this);
    sigint_ = smtpscreen::UvHandle<uv_signal_t>([this](uv_signal_t* s) { return uv_signal_init(&loop_, s); }, this);
    sigterm_ = smtpscreen::UvHandle<uv_signal_t>([this](uv_signal_t* s) { return uv_signal_init(&loop_, s); }, this);
}

ProgressReporter::~ProgressReporter() {
    tick_.close();
    sigint_.close();
    sigterm_.close();
    uv_run(&loop_, UV_RUN_DEFAULT);  // the close callbacks free the handles
    uv_loop_close(&loop_);
}

void ProgressReporter::run() {
    auto on_signal = [](uv_signal_t* s, int signum) {
        if (auto* self = static_cast<ProgressReporter*>(s->data)) self->on_signal(signum);
    };
    if (sigint_) uv_signal_start(sigint_.get(), on_signal, SIGINT);
    if (sigterm_) uv_signal_start(sigterm_.get(), on_signal, SIGTERM);
    if (tick_) {
        uv_timer_start(
            tick_.get(),
            [](uv_timer_t* t) {
                if (auto* self = static_cast<ProgressReporter*>(t->data)) self->on_tick();
            },
            kPollMs, kPollMs);
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
}

void ProgressReporter::on_tick() {
    if (workers_running_.load() == 0) {
        if (!quiet_) print_line(true);
        tick_.close();
        sigint_.close();
        sigterm_.close();
        return;
    }
    if (!quiet_ && std::chrono::steady_clock::now() - last_print_ >= std::chrono::seconds(1)) print_line(false);
}

void ProgressReporter::on_signal(int signum) {
    // The first signal ends the run as --duration would (the results are still
    // reported); a second one means "now".
    if (++signals_ > 1) std::_Exit(128 + signum);
    progress_.stop.store(true);
    if (!quiet_) std::fputs("\nsmtpload: stopping (again to quit at once)\n", stderr);
}

void ProgressReporter::print_line(bool final_line) {
    auto now = std::chrono::steady_clock::now();
    double elapsed = std::chrono::duration<double>(now - start_).count();
    double interval = std::chrono::duration<double>(now - last_print_).count();
    uint64_t done = progress_.done.load();
    double rate = interval > 0 ? static_cast<double>(done - last_done_) / interval : 0;
    last_print_ = now;
    last_done_ = done;
    uint64_t errors[kErrorKinds];
    uint64_t total_errors = 0;
    for (size_t i = 0; i < kErrorKinds; ++i) total_errors += errors[i] = progress_.errors[i].load();
    std::string line = fmt::format(
        "smtpload {:6.1f}s  done {:>9}  {:>8.0f}/s  open {:>6}  errors {} (connect {} timeout {} reset {} protocol {})",
        elapsed, done, rate, progress_.open.load(), total_errors, errors[0], errors[1], errors[2], errors[3]);
    // On a terminal the line rewrites itself; in a log file each second is a line.
    if (tty_) std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final_line ? "\n" : "");
    else std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace smtpload
