#include "bench/worker.h"

#include <algorithm>

namespace smtpload {
namespace {

constexpr uint64_t kTickMs = 100;
// Past --duration plus --timeout every session has had its chance; the rest are cut.
constexpr auto kHardDeadlineSlack = std::chrono::seconds(1);

}  // namespace

Worker::Worker(int index, int count, const Options& options, std::string_view message, Progress& progress,
               Clock::time_point run_start, TlsContext* tls)
    : options_(options),
      message_(message),
      progress_(progress),
      tls_(tls),
      run_start_(run_start),
      deadline_(run_start + options.duration),
      hard_deadline_(run_start + options.duration + options.timeout + kHardDeadlineSlack),
      mix_(options.mix),
      sources_(options.sources),
      rate_(options.rate / count),
      tokens_at_(run_start) {
    uv_loop_init(&loop_);
    int share = options.concurrency / count + (index < options.concurrency % count ? 1 : 0);
    slots_.resize(static_cast<size_t>(share));
    starting_ = share > 0;  // more threads than --concurrency: this one has nothing to run
    for (SourcePool& pool : sources_) pool.spread(static_cast<uint64_t>(index), static_cast<uint64_t>(count));
    tick_ = smtpscreen::UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(&loop_, t); }, this);
    refill_ = smtpscreen::UvHandle<uv_idle_t>([this](uv_idle_t* i) { return uv_idle_init(&loop_, i); }, this);
    if (rate_ > 0) {
        ramp_ = smtpscreen::UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(&loop_, t); }, this);
    }
}

Worker::~Worker() {
    // Close whatever is left (only after an early exit) and let libuv run the close
    // callbacks that free the handles before the loop itself goes.
    slots_.clear();
    finished_.clear();
    tick_.close();
    refill_.close();
    ramp_.close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
}

void Worker::run() {
    if (!tick_ || !refill_) return;
    uv_timer_start(
        tick_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<Worker*>(t->data)) self->on_tick();
        },
        kTickMs, kTickMs);
    schedule_refill();
    uv_run(&loop_, UV_RUN_DEFAULT);
}

// Runs from the idle handle, outside every session callback: destroys the sessions that
// ended and starts new ones in their slots. A session that fails at once (no address
// left) ends inside start() and is picked up by the next turn of the loop, so a dead
// target cannot recurse; the session budget bounds the turns.
void Worker::refill() {
    finished_.clear();
    for (size_t i = 0; starting_ && i < slots_.size(); ++i) {
        if (slots_[i]) continue;
        if (progress_.stop.load(std::memory_order_relaxed) || Clock::now() >= deadline_) {
            end_run();
            break;
        }
        if (!take_token()) break;  // ramp_ calls again when the next token is due
        if (!progress_.take_session()) {
            starting_ = false;  // idle holders still hold until the run's end
            break;
        }
        slots_[i] = std::make_unique<ClientSession>(*this, mix_.next(), i);
        slots_[i]->start();
    }
    if (refill_) uv_idle_stop(refill_.get());
    maybe_shut_down();
}

bool Worker::take_token() {
    if (rate_ <= 0) return true;
    Clock::time_point now = Clock::now();
    // A bucket of 10 ms worth of starts (at least one): smooth, yet not a timer per session.
    double burst = std::max(1.0, rate_ / 100.0);
    tokens_ = std::min(burst, tokens_ + std::chrono::duration<double>(now - tokens_at_).count() * rate_);
    tokens_at_ = now;
    if (tokens_ >= 1) {
        tokens_ -= 1;
        return true;
    }
    auto wait_ms = static_cast<uint64_t>((1 - tokens_) / rate_ * 1000.0) + 1;
    if (ramp_ && !uv_is_active(ramp_.handle())) {
        uv_timer_start(
            ramp_.get(),
            [](uv_timer_t* t) {
                if (auto* self = static_cast<Worker*>(t->data)) self->schedule_refill();
            },
            wait_ms, 0);
    }
    return false;
}

void Worker::on_tick() {
    Clock::time_point now = Clock::now();
    if (!ending_ && (now >= deadline_ || progress_.stop.load(std::memory_order_relaxed))) end_run();
    if (now >= hard_deadline_) abort_all();
    maybe_shut_down();
}

void Worker::end_run() {
    starting_ = false;
    if (ending_) return;
    ending_ = true;
    for (auto& s : slots_) {
        if (s) s->run_ending();  // may end the session now: the slot empties under us
    }
}

void Worker::abort_all() {
    for (auto& s : slots_) {
        if (s) s->abort();
    }
}

size_t Worker::active() const {
    size_t n = 0;
    for (const auto& s : slots_) n += s ? 1 : 0;
    return n;
}

void Worker::maybe_shut_down() {
    if (shut_down_ || starting_ || active() != 0) return;
    shut_down_ = true;
    tick_.close();
    refill_.close();  // nothing left holds the loop: uv_run returns
    ramp_.close();
}

double Worker::since_start_s() const {
    return std::chrono::duration<double>(Clock::now() - run_start_).count();
}

void Worker::session_connected() { progress_.open.fetch_add(1, std::memory_order_relaxed); }

void Worker::session_done(ClientSession& session, const SessionResult& result) {
    RoleStats& r = stats_.roles[index_of(result.role)];
    ++r.sessions;
    r.ok += result.ok ? 1 : 0;
    r.bytes_sent += result.bytes_sent;
    r.tls_handshakes += result.tls_done ? 1 : 0;
    r.tls_resumed += result.tls_resumed ? 1 : 0;
    ++r.replies[result.code];
    // Latency describes sessions that ran their course; errors are counted apart, so a
    // burst of 10 s timeouts shows as timeouts, not as a p99 that hides what happened.
    if (result.error) {
        ++r.errors[static_cast<size_t>(*result.error)];
        progress_.errors[static_cast<size_t>(*result.error)].fetch_add(1, std::memory_order_relaxed);
    } else {
        r.latency.record(result.latency_us);
    }
    stats_.source_retries += static_cast<uint64_t>(result.source_retries);
    stats_.last_end_s = since_start_s();
    if (result.connected) progress_.open.fetch_sub(1, std::memory_order_relaxed);
    progress_.done.fetch_add(1, std::memory_order_relaxed);

    finished_.push_back(std::move(slots_[session.slot()]));
    schedule_refill();
}

void Worker::schedule_refill() {
    if (!refill_) return;
    uv_idle_start(refill_.get(), [](uv_idle_t* i) {
        if (auto* self = static_cast<Worker*>(i->data)) self->refill();
    });
}

}  // namespace smtpload
