#include "proxy/server.h"

#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cache/verdict_cache.h"
#include "proxy/privileges.h"
#include "proxy/tls_config.h"
#include "proxy/worker.h"

namespace smtpscreen {
namespace {

class Socket {
public:
    explicit Socket(int fd) : fd_(fd) {}
    ~Socket() {
        if (fd_ >= 0) ::close(fd_);
    }
    Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Socket(const Socket&) = delete;
    int release() { return std::exchange(fd_, -1); }
    int get() const { return fd_; }

private:
    int fd_;
};

Socket bind_listener(const Endpoint& addr, bool reuse_port) {
    Socket s(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (s.get() < 0) throw std::runtime_error(fmt::format("socket() for {}: {}", addr.ip_port(), std::strerror(errno)));
    int one = 1;
    setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // Several loops share one address through SO_REUSEPORT: the kernel spreads the
    // connections, so no loop hands sockets to another.
    if (reuse_port) setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (addr.is_v6()) setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    // Replies are small and must leave at once. Accepted sockets inherit TCP_NODELAY from
    // the listener on Linux, which saves a setsockopt(2) per client.
    setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::bind(s.get(), addr.sa(), addr.sa_len()) != 0) {
        int err = errno;
        std::string hint = err == EACCES ? " (ports below 1024 need root; start as root and set process.user)"
                           : err == EADDRINUSE ? " (another program listens there; stop it or change listen.address)"
                           : err == EADDRNOTAVAIL ? " (no interface has this address; fix listen.address)"
                                                  : "";
        throw std::runtime_error(fmt::format("cannot listen on {}: {}{}", addr.ip_port(), std::strerror(err), hint));
    }
    return s;
}

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
    return buf;
}

std::shared_ptr<VerdictCache> open_cache(const Config& config, Logger& log) {
    switch (config.cache_backend) {
    case CacheBackend::Lmdb: return open_lmdb_cache(config.cache_path, log);
    case CacheBackend::Memory: return open_memory_cache();
    case CacheBackend::Redis: break;
    }
    throw std::runtime_error("cache.backend = redis is not available in this version; use lmdb or memory");
}

// SIGTERM/SIGINT on a small loop of the main thread; the workers run their own.
// Settings that belong to the process, not to a connection: a reload cannot change them.
std::vector<std::string> restart_only_changes(const Config& old, const Config& next) {
    std::vector<std::string> keys;
    if (old.listen_addresses != next.listen_addresses) keys.push_back("listen.address");
    if (old.process_threads != next.process_threads) keys.push_back("process.threads");
    if (old.process_user != next.process_user) keys.push_back("process.user");
    if (old.cache_backend != next.cache_backend || old.cache_path != next.cache_path ||
        !(old.cache_redis == next.cache_redis)) {
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
    SignalWatch(uv_loop_t* loop, std::vector<std::unique_ptr<Worker>>& workers, std::shared_ptr<const Config> config,
                std::string config_path, Logger& log)
        : workers_(workers), config_(std::move(config)), config_path_(std::move(config_path)), log_(log) {
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
        stopping_ = true;
        for (auto& w : workers_) w->request_stop();
    }

    void reload() {
        std::vector<std::string> errors;
        std::vector<std::string> warnings;
        auto next = load_config(config_path_, errors);
        if (next && errors.empty()) load_tls_contexts(*next, errors, warnings);
        if (!errors.empty() || !next) {
            for (const auto& e : errors) log_.error("{}", e);
            log_.error("SIGHUP: {} has {} error(s); keeping the settings in use", config_path_, errors.size());
            return;
        }
        for (const auto& key : restart_only_changes(*config_, *next)) {
            log_.warn("SIGHUP: a change of {} takes effect only after a restart", key);
        }
        for (const auto& w : config_warnings(*next)) log_.warn("{}", w);
        for (const auto& w : warnings) log_.warn("{}", w);
        config_ = next;
        for (auto& w : workers_) w->request_reload(next);
        log_.info("SIGHUP: reloaded {}; new connections use it, sessions in progress keep their settings",
                  config_path_);
    }

    std::vector<std::unique_ptr<Worker>>& workers_;
    std::shared_ptr<const Config> config_;
    std::string config_path_;
    Logger& log_;
    std::vector<UvHandle<uv_signal_t>> handles_;
    UvHandle<uv_async_t> done_;
    bool stopping_ = false;
};

}  // namespace

int run_server(std::shared_ptr<const Config> config, const std::string& config_path, Logger& log) {
    ::signal(SIGPIPE, SIG_IGN);
    const int threads = config->process_threads;
    std::vector<std::unique_ptr<Worker>> workers;
    std::unique_ptr<SharedServices> shared;
    try {
        std::vector<std::vector<uv_os_sock_t>> fds(static_cast<size_t>(threads));
        std::vector<Socket> sockets;
        for (const Endpoint& addr : config->listen_addresses) {
            for (auto& per_thread : fds) {
                sockets.push_back(bind_listener(addr, threads > 1));
                per_thread.push_back(sockets.back().get());
            }
        }
        drop_privileges(config->process_user);
        shared = std::make_unique<SharedServices>(log, open_cache(*config, log), host_name());
        for (auto& per_thread : fds) workers.push_back(std::make_unique<Worker>(*shared, config, per_thread));
        for (auto& s : sockets) s.release();  // the workers' handles own them now
    } catch (const std::exception& e) {
        log.error("{}", e.what());
        return 1;
    }
    for (const Endpoint& addr : config->listen_addresses) log.info("listening on {}", addr.ip_port());

    std::vector<std::thread> running;
    for (size_t i = 1; i < workers.size(); ++i) running.emplace_back([w = workers[i].get()] { w->run(); });

    // Signals get a loop and a thread of their own, so that worker 0 can run on the main thread.
    uv_loop_t signal_loop;
    uv_loop_init(&signal_loop);
    {
        SignalWatch watch(&signal_loop, workers, config, config_path, log);
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
