#pragma once
// One event loop that keeps --concurrency/--threads sessions in flight until the
// session budget or the duration runs out, and adds up what they measured.
#include <uv.h>

#include <array>
#include <chrono>
#include <memory>
#include <string_view>
#include <vector>

#include "bench/client_session.h"
#include "bench/options.h"
#include "bench/progress.h"
#include "bench/stats.h"
#include "core/uv_handle.h"

namespace smtpload {

using Clock = std::chrono::steady_clock;

class Worker final : public SessionHost {
public:
    // index/count: this worker's place among the threads (its share of the concurrency
    // and of each source pool).
    // tls: the run's shared TLS context (nullptr when no role speaks TLS).
    Worker(int index, int count, const Options& options, std::string_view message, Progress& progress,
           Clock::time_point run_start, TlsContext* tls);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    void run();  // returns when every session has ended
    const RunStats& stats() const { return stats_; }

    // SessionHost
    uv_loop_t* loop() override { return &loop_; }
    const Options& options() const override { return options_; }
    std::string_view message() const override { return message_; }
    uint32_t next_source(Role role) override { return sources_[index_of(role)].next(); }
    uv_buf_t read_buffer() override { return uv_buf_init(read_buffer_.data(), read_buffer_.size()); }
    TlsContext& tls() override { return *tls_; }
    TlsSessionKeeper& tls_sessions() override { return tls_sessions_; }
    void session_connected() override;
    void session_done(ClientSession& session, const SessionResult& result) override;

private:
    void refill();
    bool take_token();       // --rate: may one more session start now?
    void schedule_refill();  // refill() on the loop's next turn
    void on_tick();
    void end_run();  // the duration is over or the user asked to stop
    void abort_all();
    void maybe_shut_down();
    size_t active() const;
    double since_start_s() const;

    uv_loop_t loop_{};
    const Options& options_;
    const std::string_view message_;
    Progress& progress_;
    TlsContext* const tls_;
    TlsSessionKeeper tls_sessions_;
    const Clock::time_point run_start_;
    const Clock::time_point deadline_;
    const Clock::time_point hard_deadline_;
    Mix mix_;
    std::array<SourcePool, kRoleCount> sources_;
    bool starting_ = true;  // false once the budget or the duration is spent
    bool ending_ = false;   // the run's end has come: idle holders let go
    bool shut_down_ = false;
    RunStats stats_;
    std::vector<std::unique_ptr<ClientSession>> slots_;
    // Sessions that ended inside their own callback wait here to be destroyed.
    std::vector<std::unique_ptr<ClientSession>> finished_;
    std::array<char, 64 * 1024> read_buffer_{};  // one read at a time per loop: shared
    smtpscreen::UvHandle<uv_timer_t> tick_;
    smtpscreen::UvHandle<uv_idle_t> refill_;
    // --rate: a token bucket of session starts, and the timer that wakes refill() when
    // the next token is due.
    const double rate_;
    double tokens_ = 0;
    Clock::time_point tokens_at_;
    smtpscreen::UvHandle<uv_timer_t> ramp_;
};

}  // namespace smtpload
