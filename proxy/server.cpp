#include "proxy/server.h"

#include <pwd.h>
#include <unistd.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cache/redis_cache.h"
#include "cache/verdict_cache.h"
#include "proxy/backend_probe.h"
#include "proxy/cache_cleanup.h"
#include "proxy/listen_sockets.h"
#include "proxy/privileges.h"
#include "proxy/service_notify.h"
#include "proxy/tls_config.h"
#include "proxy/worker.h"
#include "stats/metrics_endpoint.h"

namespace smtpscreen {
namespace {

std::unique_ptr<VerdictCacheSource> open_cache(const Config& config, Logger& log) {
    switch (config.cache_backend) {
    case CacheBackend::Memory:
        return std::make_unique<SharedVerdictCache>(CacheStores{open_memory_cache(), open_memory_bans()});
    case CacheBackend::Redis: return open_redis_cache(config.redis_settings(), log);
    case CacheBackend::Lmdb: break;
    }
    return std::make_unique<SharedVerdictCache>(open_lmdb_stores(config.cache_path, log));
}

std::string user_name() {
    if (passwd* pw = ::getpwuid(::geteuid())) return pw->pw_name;
    return fmt::format("uid {}", ::geteuid());
}

std::string_view action_name(Action a) {
    for (const auto& [name, action] : kActionNames) {
        if (action == a) return name;
    }
    return "?";
}

// The one line an admin reads first: what runs, from which file, as whom, where, and
// which tests are on.
std::string startup_line(const Config& c, const TlsContexts& tls, const std::string& config_path,
                         const ListenSockets& listeners) {
    std::vector<std::string> tests{fmt::format("pregreet ({})", action_name(c.greet_action))};
    if (!c.dnsbl_sites.empty()) {
        std::string zones;
        for (const auto& site : c.dnsbl_sites) zones += (zones.empty() ? "" : " ") + site.zone;
        tests.push_back(fmt::format("dnsbl {} ({})", zones, action_name(c.dnsbl_action)));
    }
    if (!c.access_file.empty()) tests.push_back(fmt::format("access {} ({})", c.access_file, action_name(c.access_action)));
    std::vector<std::string> deep;
    if (c.deep_pipelining) deep.push_back("pipelining");
    if (c.deep_non_smtp_command) deep.push_back("non_smtp_command");
    if (c.deep_bare_newline) deep.push_back("bare_newline");
    if (!deep.empty()) tests.push_back(fmt::format("deep {} ({})", fmt::join(deep, "+"), action_name(c.deep_action)));
    if (c.greylist_enable) tests.push_back(fmt::format("greylist (delay {})", format_duration(c.greylist_delay)));
    return fmt::format("smtpscreen {} started: config {}, user {}, listening on {}{}, tests: {}{}{}", SMTPSCREEN_VERSION,
                       config_path, user_name(), listeners.describe(),
                       listeners.inherited() ? " (socket activation)" : "", fmt::join(tests, ", "),
                       tls.server ? ", STARTTLS on" : "",
                       c.stats_listen ? fmt::format(", metrics on http://{}/metrics", c.stats_listen->ip_port())
                                      : std::string());
}

// SIGTERM/SIGINT on a small loop of the main thread; the workers run their own.
// Settings that belong to the process, not to a connection: a reload cannot change them.
std::vector<std::string> restart_only_changes(const Config& old, const Config& next) {
    std::vector<std::string> keys;
    if (old.process_threads != next.process_threads) keys.push_back("process.threads");
    if (old.tls_handshake_threads != next.tls_handshake_threads) keys.push_back("tls.handshake_threads");
    if (old.process_user != next.process_user) keys.push_back("process.user");
    if (old.stats_listen != next.stats_listen) keys.push_back("stats.listen");
    if (old.cache_backend != next.cache_backend || old.cache_path != next.cache_path ||
        old.redis_settings() != next.redis_settings()) {
        keys.push_back("cache.*");
    }
    if (old.log_syslog != next.log_syslog || old.log_syslog_name != next.log_syslog_name ||
        old.log_stderr != next.log_stderr) {
        keys.push_back("log.*");
    }
    return keys;
}

class SignalWatch {
public:
    SignalWatch(uv_loop_t* loop, std::vector<std::unique_ptr<Worker>>& workers, ListenSockets& listeners,
                std::shared_ptr<const Config> config, std::string config_path, Logger& log,
                VerdictCacheSource& caches, std::unique_ptr<MetricsEndpoint> metrics,
                BackendOffer& offer)
        : metrics_(std::move(metrics)),
          workers_(workers),
          listeners_(listeners),
          config_(std::move(config)),
          config_path_(std::move(config_path)),
          log_(log) {
        // Only an lmdb file keeps expired records around: memory drops them when full,
        // Redis expires its keys itself.
        if (config_->cache_backend == CacheBackend::Lmdb) {
            cleanup_ = std::make_unique<CacheCleanup>(loop, caches.for_loop(loop).verdicts, "lmdb:" + config_->cache_path,
                                                      config_->cache_cleanup_interval, log);
        }
        probe_ = std::make_unique<BackendProbe>(loop, offer, log);
        probe_->start(config_);
        done_ = UvHandle<uv_async_t>(
            [loop](uv_async_t* a) {
                return uv_async_init(loop, a, [](uv_async_t* h) {
                    if (auto* self = static_cast<SignalWatch*>(h->data)) self->close();
                });
            },
            this);
        for (int signum : {SIGTERM, SIGINT, SIGHUP}) {
            handles_.emplace_back([loop](uv_signal_t* s) { return uv_signal_init(loop, s); }, this);
            uv_signal_start(
                handles_.back().get(),
                [](uv_signal_t* s, int n) {
                    if (auto* self = static_cast<SignalWatch*>(s->data)) self->on_signal(n);
                },
                signum);
        }
    }

    // From the main thread once every worker has returned: lets the signal loop end.
    void workers_finished() { uv_async_send(done_.get()); }

private:
    void close() {
        metrics_.reset();
        if (cleanup_) cleanup_->stop();
        probe_->stop();
        handles_.clear();
        done_.close();
    }

    void on_signal(int signum) {
        if (signum == SIGHUP) return reload();
        const char* name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
        if (stopping_) {
            log_.info("{} again: closing the sessions in progress now", name);
        } else {
            log_.info("{}: no longer accepting; waiting up to limits.shutdown_grace for sessions in progress", name);
        }
        if (!stopping_) service_notify::stopping();
        stopping_ = true;
        for (auto& w : workers_) w->request_stop();
    }

    void reload() {
        if (stopping_) return;
        service_notify::reloading();
        apply_reload();
        service_notify::ready(fmt::format("listening on {}", listeners_.describe()));
    }

    // A refused reload is one log line, so that an admin (and fail2ban, logcheck) sees one
    // event: the first error with its FILE:LINE, and how to see the others.
    void refuse(size_t count, const std::string& first) {
        log_.error("SIGHUP: {} has {} error(s); keeping the settings in use: {}{}", config_path_, count, first,
                   count > 1 ? fmt::format(" (and {} more: smtpscreen -c {} --check lists them)", count - 1,
                                           config_path_)
                             : std::string());
    }

    void apply_reload() {
        std::vector<std::string> errors;
        std::vector<std::string> warnings;
        auto next = load_config(config_path_, errors);
        std::shared_ptr<const TlsContexts> next_tls;
        if (next && errors.empty()) next_tls = load_tls_contexts(*next, errors, warnings);
        if (!errors.empty() || !next) {
            refuse(errors.size(), errors.empty() ? std::string("cannot be read") : errors.front());
            return;
        }
        std::optional<std::vector<std::vector<uv_os_sock_t>>> listen_fds;
        if (next->listen_addresses != config_->listen_addresses) {
            std::string why;
            if (!listeners_.update(next->listen_addresses, why)) return refuse(1, "listen.address: " + why);
            if (!why.empty()) log_.warn("SIGHUP: {}", why);
            listen_fds.emplace();
            for (size_t i = 0; i < workers_.size(); ++i) listen_fds->push_back(listeners_.for_thread(i));
        }
        for (const auto& key : restart_only_changes(*config_, *next)) {
            log_.warn("SIGHUP: a change of {} takes effect only after a restart", key);
        }
        for (const auto& w : config_warnings(*next)) log_.warn("{}", w);
        for (const auto& w : warnings) log_.warn("{}", w);
        config_ = next;
        if (cleanup_) cleanup_->set_interval(next->cache_cleanup_interval);
        probe_->start(next);
        for (size_t i = 0; i < workers_.size(); ++i) {
            workers_[i]->request_reload(next, next_tls,
                                        listen_fds ? std::optional((*listen_fds)[i]) : std::nullopt);
        }
        if (listen_fds) log_.info("SIGHUP: listening on {}", listeners_.describe());
        log_.info("SIGHUP: reloaded {}; new connections use it, sessions in progress keep their settings",
                  config_path_);
    }

    // On this loop, not a worker's: a scraper never delays an SMTP session.
    std::unique_ptr<MetricsEndpoint> metrics_;
    std::vector<std::unique_ptr<Worker>>& workers_;
    ListenSockets& listeners_;
    std::shared_ptr<const Config> config_;
    std::string config_path_;
    Logger& log_;
    std::vector<UvHandle<uv_signal_t>> handles_;
    UvHandle<uv_async_t> done_;
    std::unique_ptr<CacheCleanup> cleanup_;
    std::unique_ptr<BackendProbe> probe_;
    bool stopping_ = false;
};

}  // namespace

int run_server(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls,
               const std::string& config_path, Logger& log) {
    ::signal(SIGPIPE, SIG_IGN);
    // Until the signal loop below takes it, a SIGHUP must not kill the process (its
    // default action); the file is being read right now anyway.
    ::signal(SIGHUP, SIG_IGN);
    // A SIGTERM or SIGINT that arrives once the port is open but before the signal loop
    // watches for it would kill the process at once (its default action) with clients
    // already queued: it waits, blocked, until the watch below is in place. Threads
    // started meanwhile keep it blocked, so it reaches the signal loop's thread.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    const int threads = config->process_threads;
    std::vector<std::unique_ptr<Worker>> workers;
    std::unique_ptr<SharedServices> shared;
    std::unique_ptr<ListenSockets> listeners;
    // Signals get a loop and a thread of their own, so that worker 0 can run on the main
    // thread; the metrics endpoint runs there too.
    uv_loop_t signal_loop;
    uv_loop_init(&signal_loop);
    std::unique_ptr<MetricsEndpoint> metrics;
    try {
        listeners = std::make_unique<ListenSockets>(config->listen_addresses, threads, log);
        drop_privileges(config->process_user);
        shared = std::make_unique<SharedServices>(log, open_cache(*config, log), config->tls_handshake_threads);
        for (size_t i = 0; i < static_cast<size_t>(threads); ++i) {
            workers.push_back(std::make_unique<Worker>(*shared, config, tls, listeners->for_thread(i)));
        }
        if (config->stats_listen) {
            std::vector<const WorkerMetrics*> counted;
            for (const auto& w : workers) counted.push_back(&w->metrics());
            // CAP_NET_BIND_SERVICE is kept, so a port below 1024 still binds here.
            metrics = std::make_unique<MetricsEndpoint>(&signal_loop, *config->stats_listen,
                                                         [counted, rates = shared->rates.get(),
                                                          greylist = shared->greylist.get(),
                                                          tarpit = &shared->tarpit] {
                                                             auto figures = read_process_figures();
                                                             figures.rate_table_keys = rates->keys_in_memory();
                                                             figures.greylist_triplets = greylist->entries_in_memory();
                                                             figures.tarpitted = static_cast<uint64_t>(
                                                                 std::max(tarpit->in_use(), 0));
                                                             return format_metrics(counted, figures);
                                                         });
        }
    } catch (const std::exception& e) {
        log.error("{}", e.what());
        metrics.reset();
        uv_run(&signal_loop, UV_RUN_DEFAULT);
        uv_loop_close(&signal_loop);
        return 1;
    }
    std::vector<std::thread> running;
    for (size_t i = 1; i < workers.size(); ++i) running.emplace_back([w = workers[i].get()] { w->run(); });

    {
        SignalWatch watch(&signal_loop, workers, *listeners, config, config_path, log, *shared->caches,
                          std::move(metrics), shared->backend_offer);
        pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
        // Only now: systemd may send SIGHUP as soon as it hears READY=1.
        log.info("{}", startup_line(*config, *tls, config_path, *listeners));
        service_notify::ready(fmt::format("listening on {}", listeners->describe()));
        std::thread signals_thread([&signal_loop] { uv_run(&signal_loop, UV_RUN_DEFAULT); });
        workers[0]->run();
        for (auto& t : running) t.join();
        watch.workers_finished();
        signals_thread.join();
    }
    uv_run(&signal_loop, UV_RUN_DEFAULT);  // the close callbacks of the signal handles
    uv_loop_close(&signal_loop);
    workers.clear();
    log.info("stopped");
    return 0;
}

}  // namespace smtpscreen
