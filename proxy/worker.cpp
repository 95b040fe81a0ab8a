#include "proxy/worker.h"

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "proxy/accept_handshake.h"
#include "proxy/session.h"

namespace smtpscreen {

namespace {

std::optional<Endpoint> bound_address(uv_os_sock_t fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    auto addr = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
    if (!addr) return std::nullopt;
    std::string_view raw = addr->raw();
    if (std::all_of(raw.begin(), raw.end(), [](char c) { return c == 0; })) return std::nullopt;  // a wildcard
    return addr;
}

}  // namespace

Worker::Worker(SharedServices& shared, std::shared_ptr<const Config> loaded, std::shared_ptr<const TlsContexts> tls,
               std::vector<uv_os_sock_t> listen_fds)
    : shared_(shared),
      settings_(SessionSettings::make(std::move(loaded), std::move(tls))),
      log_batch_(shared.log),
      events_(log_batch_, metrics_) {
    if (int rc = uv_loop_init(&loop_); rc != 0) {
        throw std::runtime_error(fmt::format("cannot create an event loop: {}", uv_strerror(rc)));
    }
    deadlines_ = std::make_unique<DeadlineTimers>(&loop_);
    handshake_steps_ = std::make_unique<HandshakeQueue>(&loop_, shared.handshake_pool);
    resolver_ = std::make_shared<DnsClient>(&loop_, config().dnsbl_servers, config().dnsbl_timeout, shared.log);
    auto stores = shared.caches->for_loop(&loop_);
    cache_ = std::move(stores.verdicts);
    bans_ = std::move(stores.bans);
    rates_ = cache_->loop_rates(*shared.rates);
    failures_ = bans_->loop_failures(shared.failures);
    greylist_ = cache_->loop_greylist();
    for (uv_os_sock_t fd : listen_fds) listen_on(fd);
    stop_signal_ = UvHandle<uv_async_t>(
        [this](uv_async_t* a) {
            return uv_async_init(&loop_, a, [](uv_async_t* h) {
                if (auto* self = static_cast<Worker*>(h->data)) self->on_stop_requested();
            });
        },
        this);
    reload_signal_ = UvHandle<uv_async_t>(
        [this](uv_async_t* a) {
            return uv_async_init(&loop_, a, [](uv_async_t* h) {
                if (auto* self = static_cast<Worker*>(h->data)) self->on_reload_requested();
            });
        },
        this);
    // libuv closes a connection whose accept(2) fails with EMFILE without telling us;
    // a once-a-second look at the descriptor budget is how the operator hears of it.
    fd_watch_ = UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(&loop_, t); }, this);
    uv_timer_start(
        fd_watch_.get(),
        [](uv_timer_t* t) {
            auto* self = static_cast<Worker*>(t->data);
            if (self && self->fd_capacity() <= self->shared_.limits.total()) self->out_of_descriptors();
        },
        1000, 1000);
    uv_unref(fd_watch_.handle());
    reaper_ = UvHandle<uv_check_t>([this](uv_check_t* c) { return uv_check_init(&loop_, c); }, this);
    uv_check_start(reaper_.get(), [](uv_check_t* c) {
        if (auto* self = static_cast<Worker*>(c->data)) self->reap();
    });
    // The reaper must not keep the loop alive on its own.
    uv_unref(reaper_.handle());
    // Prepare handles run last before the loop waits for events: every line of the turn
    // reaches stderr before the loop sleeps.
    log_flush_ = UvHandle<uv_prepare_t>([this](uv_prepare_t* p) { return uv_prepare_init(&loop_, p); }, this);
    uv_prepare_start(log_flush_.get(), [](uv_prepare_t* p) {
        if (auto* self = static_cast<Worker*>(p->data)) self->log_batch_.flush();
    });
    uv_unref(log_flush_.handle());
}

void Worker::listen_on(uv_os_sock_t fd) {
    UvHandle<uv_tcp_t> tcp([this](uv_tcp_t* t) { return uv_tcp_init(&loop_, t); }, this);
    if (int rc = uv_tcp_open(tcp.get(), fd); rc != 0) {
        ::close(fd);
        throw std::runtime_error(fmt::format("cannot adopt a listening socket: {}", uv_strerror(rc)));
    }
    // The kernel caps the backlog at net.core.somaxconn; a burst of bots must not
    // overflow it while the loop is busy.
    int rc = uv_listen(tcp.stream(), 65535, [](uv_stream_t* s, int status) {
        if (auto* self = static_cast<Worker*>(s->data)) self->on_connection(s, status);
    });
    if (rc != 0) throw std::runtime_error(fmt::format("cannot listen: {}", uv_strerror(rc)));
    listeners_.push_back(Listener{std::move(tcp), fd, bound_address(fd)});
}

void Worker::replace_listeners(const std::vector<uv_os_sock_t>& fds) {
    if (stopping_) {
        // Stopping already: the new sockets are not wanted; the old ones are closed.
        for (uv_os_sock_t fd : fds) {
            bool ours = std::any_of(listeners_.begin(), listeners_.end(), [fd](const Listener& l) { return l.fd == fd; });
            if (!ours) ::close(fd);
        }
        return;
    }
    auto gone = [&](const Listener& l) { return std::find(fds.begin(), fds.end(), l.fd) == fds.end(); };
    for (const Listener& l : listeners_) {
        if (gone(l)) deferred_.erase(std::remove(deferred_.begin(), deferred_.end(), l.tcp.stream()), deferred_.end());
    }
    // Erasing closes the handle and with it the socket; a session accepted on it keeps
    // its own socket and finishes.
    listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(), gone), listeners_.end());
    for (uv_os_sock_t fd : fds) {
        if (std::none_of(listeners_.begin(), listeners_.end(), [fd](const Listener& l) { return l.fd == fd; })) {
            try {
                listen_on(fd);
            } catch (const std::exception& e) {
                shared_.log.error("reload: {}", e.what());
            }
        }
    }
}

Worker::~Worker() {
    close_everything();
    stop_signal_.close();
    reload_signal_.close();
    resolver_.reset();
    retired_resolvers_.clear();  // closed by close_everything, freed before the loop is
    // Let every close callback run, then the loop can be closed.
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
}

void Worker::run() { uv_run(&loop_, UV_RUN_DEFAULT); }

void Worker::request_stop() {
    if (stop_signal_) uv_async_send(stop_signal_.get());
}

void Worker::request_reload(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls,
                            std::optional<std::vector<uv_os_sock_t>> listen_fds) {
    {
        std::lock_guard lock(reload_mutex_);
        pending_config_ = std::move(config);
        pending_tls_ = std::move(tls);
        if (listen_fds) pending_listen_fds_ = std::move(listen_fds);
    }
    if (reload_signal_) uv_async_send(reload_signal_.get());
}

void Worker::on_reload_requested() {
    std::shared_ptr<const Config> next;
    std::shared_ptr<const TlsContexts> next_tls;
    std::optional<std::vector<uv_os_sock_t>> listen_fds;
    {
        std::lock_guard lock(reload_mutex_);
        next = std::move(pending_config_);
        next_tls = std::move(pending_tls_);
        listen_fds = std::exchange(pending_listen_fds_, std::nullopt);
    }
    // The sockets change even if the rest of the reload fails below: the server has
    // already forgotten the old ones.
    if (listen_fds) replace_listeners(*listen_fds);
    if (!next) return;
    if (next->dnsbl_servers != config().dnsbl_servers || next->dnsbl_timeout != config().dnsbl_timeout) {
        std::shared_ptr<DnsClient> fresh;
        try {
            fresh = std::make_shared<DnsClient>(&loop_, next->dnsbl_servers, next->dnsbl_timeout, shared_.log);
        } catch (const std::exception& e) {
            shared_.log.error("reload: {}; keeping the settings in use", e.what());
            return;
        }
        retire_resolver();
        resolver_ = std::move(fresh);
    }
    settings_ = SessionSettings::make(std::move(next), std::move(next_tls));
}

void Worker::on_connection(uv_stream_t* listener, int status) {
    // libuv accepts until the backlog is empty before it looks at any other socket: a
    // flood of thousands of connects would starve the DNS answers (listed clients would
    // time out into "not listed") and every relay. Past a batch, the connection waits in
    // the kernel; not taking it makes libuv pause this listener until accept_deferred().
    if (status == 0 && accepted_this_turn_ >= kAcceptsPerTurn) {
        if (std::find(deferred_.begin(), deferred_.end(), listener) == deferred_.end()) deferred_.push_back(listener);
        return;
    }
    ++accepted_this_turn_;
    auto handshake = std::make_unique<AcceptHandshake>(*this, settings_);
    // Out of descriptors (EMFILE/ENFILE), libuv accepts and closes the connection with a
    // reserve descriptor, so the loop does not spin, and then reports either the error
    // or a connection that is not there: uv_accept finds nothing.
    if (status == 0) {
        const Listener* from = nullptr;
        for (const Listener& l : listeners_) {
            if (l.tcp.stream() == listener) from = &l;
        }
        status = handshake->start(listener, from ? from->fixed_local : std::nullopt);
    }
    if (status != 0) return accept_failed(status);
    // Without a PROXY header to wait for, the session has started and the handshake is over.
    LiveClient* raw = handshake.get();
    if (!raw->finished()) keep(std::move(handshake));
}

void Worker::start_session(SessionSettings::Ref settings, AcceptedClient client) {
    auto session = std::make_unique<Session>(*this, std::move(settings), *client.conn);
    Session* raw = session.get();
    // Kept before it starts: a session that ends at once (too many connections) is then
    // destroyed after the callback, as every other one, not inside its connection's read.
    raw->serial_ = ++next_serial_;
    keep(std::move(session));
    raw->start(std::move(client));
}

namespace {

rlim_t count_open_fds() {
    rlim_t n = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (::readdir(dir) != nullptr) ++n;
        ::closedir(dir);
    }
    return n;
}

}  // namespace

int Worker::fd_capacity() {
    uint64_t now = uv_now(&loop_);
    if (fd_capacity_known_ && now - fd_capacity_read_at_ < 1000) return fd_capacity_ - shared_.backend_legs;
    fd_capacity_known_ = true;
    fd_capacity_read_at_ = now;
    rlimit nofile{};
    getrlimit(RLIMIT_NOFILE, &nofile);
    // Kept back: what the process had open before the first client (listeners, the
    // resolver, the cache, syslog, libuv's own), and a margin for the resolver's sockets.
    if (base_fds_ == 0) base_fds_ = count_open_fds() + 16;
    rlim_t usable = nofile.rlim_cur > base_fds_ ? nofile.rlim_cur - base_fds_ : 1;
    fd_capacity_ = static_cast<int>(std::min<rlim_t>(usable, 1'000'000));
    return fd_capacity_ - shared_.backend_legs;
}

void Worker::out_of_descriptors() {
    uint64_t now = uv_now(&loop_);
    if (now - last_accept_error_log_ < 1000) return;
    last_accept_error_log_ = now;
    shared_.log.warn(
        "accept failed: out of file descriptors: {} sockets fill the open files limit; new clients get 421 "
        "until some end (raise ulimit -n / LimitNOFILE, or lower limits.max_connections)",
        fd_capacity_);
}

void Worker::accept_failed(int status) {
    uint64_t now = uv_now(&loop_);
    if (now - last_accept_error_log_ < 1000) return;  // at most once a second
    last_accept_error_log_ = now;
    const bool no_fds = status == UV_EMFILE || status == UV_ENFILE || status == UV_EAGAIN;
    shared_.log.warn("accept failed: {}{}", no_fds ? "out of file descriptors; connections are being turned away" : uv_strerror(status),
                     no_fds ? " (raise the open files limit, ulimit -n / LimitNOFILE, or lower limits.max_connections)" : "");
}

// The sessions of now may have DNSBL lookups on the resolver being replaced, and their
// lookups hold no reference to it: it is kept until the last of them is over (and the
// ones that ended in this turn of the loop are destroyed: reap). Only they can use it:
// a session started later asks the new one.
void Worker::retire_resolver() {
    if (!resolver_) return;
    size_t sessions = 0;
    for (const auto& client : clients_) {
        if (client && client->serial() != 0) ++sessions;
    }
    retired_resolvers_.push_back({std::move(resolver_), next_serial_, sessions});
}

void Worker::keep(std::unique_ptr<LiveClient> client) {
    size_t slot = clients_.size();
    if (!free_slots_.empty()) {
        slot = free_slots_.back();
        free_slots_.pop_back();
    } else {
        clients_.emplace_back();
    }
    client->slot_ = slot;
    clients_[slot] = std::move(client);
    ++client_count_;
}

void Worker::client_done(LiveClient* client) {
    if (client->slot_ == LiveClient::kNoSlot) return;  // ended within Worker::on_connection, which drops it
    finished_.push_back(std::move(clients_[client->slot_]));
    free_slots_.push_back(static_cast<uint32_t>(client->slot_));
    client->slot_ = LiveClient::kNoSlot;
    --client_count_;
    if (client->serial() != 0) {
        for (RetiredResolver& r : retired_resolvers_) {
            if (client->serial() <= r.last_serial) --r.sessions;
        }
    }
    uv_ref(reaper_.handle());
}

void Worker::accept_deferred() {
    accepted_this_turn_ = 0;
    std::vector<uv_stream_t*> deferred = std::move(deferred_);
    deferred_.clear();
    // uv_accept takes the connection libuv holds for us and resumes the listener.
    for (uv_stream_t* listener : deferred) on_connection(listener, 0);
}

void Worker::reap() {
    accept_deferred();
    const bool had_finished = !finished_.empty();
    finished_.clear();
    // After the sessions, whose lookups it answers: none of them is left.
    std::erase_if(retired_resolvers_, [](const RetiredResolver& r) { return r.sessions == 0; });
    // glibc keeps freed heap for reuse; after a burst, give it back once the loop
    // is idle again, so the resident size returns to its idle level.
    if (had_finished && client_count_ == 0) {
        uint64_t now = uv_now(&loop_);
        if (now - last_trim_ >= 1000) {
            last_trim_ = now;
            ::malloc_trim(0);
        }
    }
    uv_unref(reaper_.handle());
    if (stopping_ && client_count_ == 0) close_everything();
}

void Worker::on_stop_requested() {
    if (stopping_) return close_everything();  // asked twice: no more grace
    stopping_ = true;
    listeners_.clear();  // stop accepting at once; sessions in progress go on
    deferred_.clear();
    if (client_count_ == 0) return close_everything();
    grace_timer_ = UvHandle<uv_timer_t>([this](uv_timer_t* t) { return uv_timer_init(&loop_, t); }, this);
    uv_timer_start(
        grace_timer_.get(),
        [](uv_timer_t* t) {
            if (auto* self = static_cast<Worker*>(t->data)) self->on_grace_over();
        },
        static_cast<uint64_t>(config().shutdown_grace.count()), 0);
}

void Worker::on_grace_over() { close_everything(); }

void Worker::close_everything() {
    listeners_.clear();
    // Other threads may still signal these until the worker is destroyed: they stay
    // open, but no longer keep the loop running.
    uv_unref(stop_signal_.handle());
    uv_unref(reload_signal_.handle());
    grace_timer_.close();
    fd_watch_.close();
    // Sessions report back through client_done while aborting: take them out first.
    auto left = std::move(clients_);
    clients_.clear();
    free_slots_.clear();
    client_count_ = 0;
    for (auto& owned : left) {
        if (!owned) continue;
        owned->slot_ = LiveClient::kNoSlot;
        owned->abort("shutdown");
    }
    left.clear();
    finished_.clear();
    deadlines_->close();
    handshake_steps_->close();
    reaper_.close();
    log_flush_.close();  // what is logged from here on waits for the batch's destructor at most
    log_batch_.flush();
    if (resolver_) resolver_->close();
    for (RetiredResolver& r : retired_resolvers_) r.resolver->close();
    rates_.reset();
    failures_.reset();
    greylist_.reset();
    cache_.reset();
    bans_.reset();
}

}  // namespace smtpscreen
