#pragma once
// One event loop on one thread, with its own listeners (SO_REUSEPORT sockets bound by
// the server before privileges were dropped), its own DNS resolver and its sessions.
#include <uv.h>

#include <atomic>
#include <mutex>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/verdict_cache.h"
#include "config/config.h"
#include "core/deadline_timers.h"
#include "core/log.h"
#include "core/log_batch.h"
#include "core/uv_handle.h"
#include "dnsbl/dns_client.h"
#include "edge/connection_rates.h"
#include "edge/failure_counts.h"
#include "edge/greylist.h"
#include "edge/tarpit.h"
#include "proxy/backend_offer.h"
#include "proxy/connection.h"
#include "proxy/connection_limits.h"
#include "proxy/event_log.h"
#include "proxy/handshake_pool.h"
#include "proxy/handshake_queue.h"
#include "proxy/handshake_slots.h"
#include "proxy/metrics.h"
#include "proxy/live_client.h"
#include "proxy/session_settings.h"
#include "proxy/tls_config.h"

namespace smtpscreen {

struct AcceptedClient;

// What every loop thread shares; owned by the server, outlives the workers.
struct SharedServices {
    SharedServices(Logger& l, std::unique_ptr<VerdictCacheSource> c, int handshake_threads)
        : log(l),
          caches(std::move(c)),
          backend_offer(l),
          greylist(std::make_unique<SharedGreylistTable>(caches->greylist_archive())),
          handshake_pool(handshake_threads) {}
    Logger& log;
    std::unique_ptr<VerdictCacheSource> caches;  // each worker asks it for its loop's cache
    BackendOffer backend_offer;  // deep.ehlo_keywords = auto
    ConnectionLimits limits;
    // limits.per_client_rate and limits.per_network_rate, counted across all loops; with
    // a cache shared by instances (Redis), where a loop counts when that cannot answer.
    std::unique_ptr<ConnectionRates> rates = std::make_unique<SharedRateTable>();
    // greylist.enable: the triplets, shared by all loops (and kept in the lmdb cache's
    // file with cache.backend = lmdb); with a cache the instances share (Redis), the
    // loops keep them there instead (Worker::greylist).
    std::unique_ptr<GreylistStore> greylist;
    // Failed tests counted against ban.after, across all loops; with a cache shared by
    // instances (Redis), where a loop counts when that cannot answer.
    FailureCounts failures;
    std::atomic<int> backend_legs{0};  // open backend sockets, all threads: they use descriptors too
    // tarpit.max_connections is per process: every loop takes its slots here.
    TarpitSlots tarpit;
    HandshakeSlots tls_handshakes;     // tls.max_pending_handshakes, all threads
    HandshakePool handshake_pool;      // tls.handshake_threads: the steps of every loop's handshakes
};

class Worker {
public:
    Worker(SharedServices& shared, std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls,
           std::vector<uv_os_sock_t> listen_fds);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Runs the loop on the calling thread until stopped and every handle is closed.
    void run();
    // From any thread: stop accepting, give sessions limits.shutdown_grace, then return from run().
    void request_stop();
    // From any thread: new connections get this configuration (and the TLS contexts built
    // from it); sessions in progress keep theirs. With listen_fds, the loop accepts on
    // those from now on: a descriptor it already listens on is kept, a new one is
    // adopted, one not in the list is closed (sessions accepted on it go on).
    void request_reload(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls,
                        std::optional<std::vector<uv_os_sock_t>> listen_fds = std::nullopt);

    uv_loop_t* loop() { return &loop_; }
    ReadBuffer& read_buffer() { return *read_buffer_; }
    // The sessions' deadlines, on one uv_timer for the loop (core/deadline_timers.h).
    DeadlineTimers& deadlines() { return *deadlines_; }
    // Sessions keep the resolver they started with, so a reload that changes
    // dnsbl.servers does not pull it from under their pending lookups.
    std::shared_ptr<DnsClient> resolver() { return resolver_; }
    EventLog& events() { return events_; }
    // Written by this loop's thread only; read by the metrics endpoint's at a scrape.
    WorkerMetrics& metrics() { return metrics_; }
    const WorkerMetrics& metrics() const { return metrics_; }
    VerdictCache& cache() { return *cache_; }
    BanStore& bans() { return *bans_; }
    FailureCounter& failures() { return failures_ ? *failures_ : shared_.failures; }
    ConnectionLimits& limits() { return shared_.limits; }
    ConnectionRates& rates() { return rates_ ? *rates_ : *shared_.rates; }
    GreylistStore& greylist() { return greylist_ ? *greylist_ : *shared_.greylist; }
    BackendOffer& backend_offer() { return shared_.backend_offer; }
    std::atomic<int>& backend_legs() { return shared_.backend_legs; }
    TarpitSlots& tarpit() { return shared_.tarpit; }
    HandshakeSlots& tls_handshakes() { return shared_.tls_handshakes; }
    // This loop's way to the handshake pool (proxy/handshake_queue.h).
    HandshakeQueue& handshake_steps() { return *handshake_steps_; }
    // How many client sockets the open files limit leaves room for, besides the backend
    // sockets open now. libuv turns an accept that fails with EMFILE into a silent close,
    // so smtpscreen keeps below the limit itself and answers 421 instead.
    // The limit is read again at most once a second (prlimit can change it at run time).
    int fd_capacity();
    // A client was turned away because of fd_capacity(): logged at most once a second.
    void out_of_descriptors();

    // An accepted connection is past its handshakes (proxy/accept_handshake.h): its
    // session starts, with the configuration it was accepted under.
    void start_session(SessionSettings::Ref settings, AcceptedClient client);
    // The handshake or session is over; it is destroyed after the current callback returns.
    void client_done(LiveClient* client);
    // Whether the client that had this slot and serial is still one of the loop's
    // clients: for callbacks from a store (cache, bans, rates, greylist), which may
    // answer after the client has ended and another has taken its slot. Looks only at
    // the slot's client of now, never at the one that asked.
    bool alive(uint64_t slot, uint64_t serial) const {
        return slot < clients_.size() && clients_[slot] && clients_[slot]->serial() == serial;
    }
    // Taken while the client is alive and tested later: true while it still is.
    struct Liveness {
        const Worker* worker;
        uint64_t slot;
        uint64_t serial;
        explicit operator bool() const { return worker->alive(slot, serial); }
    };
    Liveness liveness(const LiveClient& client) const { return {this, client.slot_, client.serial()}; }

private:
    void listen_on(uv_os_sock_t fd);
    void replace_listeners(const std::vector<uv_os_sock_t>& fds);
    void on_connection(uv_stream_t* listener, int status);
    void accept_failed(int status);
    void accept_deferred();
    void on_stop_requested();
    void on_reload_requested();
    void on_grace_over();
    void reap();
    void close_everything();

    const Config& config() const { return settings_->config(); }

    SharedServices& shared_;
    // The configuration and its TLS contexts, for the sessions started from now on; each
    // keeps the one it started under to its end.
    SessionSettings::Ref settings_;
    uv_loop_t loop_{};
    std::unique_ptr<ReadBuffer> read_buffer_ = std::make_unique<ReadBuffer>();
    // Made once the loop is; destroyed after the sessions, whose deadlines it holds.
    std::unique_ptr<DeadlineTimers> deadlines_;
    // Made once the loop is; closed after the sessions, and the loop runs until the
    // steps they left on the pool are back.
    std::unique_ptr<HandshakeQueue> handshake_steps_;
    // This loop's log lines, written once a turn (core/log_batch.h); before events_,
    // which writes into it, and flushed by log_flush_ before the loop waits.
    LogBatch log_batch_;
    WorkerMetrics metrics_;  // before events_, which counts into it
    EventLog events_;
    std::shared_ptr<DnsClient> resolver_;
    // Resolvers a reload replaced, each until the sessions that were open then are over
    // (a DNSBL lookup holds no reference to its resolver: docs/design.md, "Memory per
    // connection").
    struct RetiredResolver {
        std::shared_ptr<DnsClient> resolver;
        uint64_t last_serial;  // the sessions that may use it: serials up to this one
        size_t sessions;       // of those, how many are still open
    };
    void retire_resolver();
    std::vector<RetiredResolver> retired_resolvers_;
    // This loop's view of the cache (a connection of its own for Redis); closed with
    // everything else, so that it does not keep the loop running.
    std::shared_ptr<VerdictCache> cache_;
    std::shared_ptr<BanStore> bans_;  // often the same object as cache_
    // The rate counts through that cache's connection, when it is one the instances
    // share (VerdictCache::loop_rates); destroyed before it.
    std::unique_ptr<ConnectionRates> rates_;
    // The failures toward ban.after through the bans' store, when the instances share it
    // (BanStore::loop_failures); destroyed before it.
    std::unique_ptr<FailureCounter> failures_;
    // Greylisting's triplets through that connection (VerdictCache::loop_greylist);
    // destroyed before it.
    std::unique_ptr<GreylistStore> greylist_;
    struct Listener {
        UvHandle<uv_tcp_t> tcp;
        uv_os_sock_t fd;
        // The address every connection to it arrives at, when it is bound to one address
        // (not 0.0.0.0 or ::): then no getsockname(2) is needed per client.
        std::optional<Endpoint> fixed_local;
    };
    std::vector<Listener> listeners_;
    UvHandle<uv_async_t> stop_signal_;
    UvHandle<uv_async_t> reload_signal_;
    std::mutex reload_mutex_;
    std::shared_ptr<const Config> pending_config_;  // guarded by reload_mutex_
    std::optional<std::vector<uv_os_sock_t>> pending_listen_fds_;  // guarded by reload_mutex_
    std::shared_ptr<const TlsContexts> pending_tls_;  // guarded by reload_mutex_
    UvHandle<uv_timer_t> grace_timer_;
    UvHandle<uv_check_t> reaper_;
    UvHandle<uv_prepare_t> log_flush_;
    UvHandle<uv_timer_t> fd_watch_;
    // Accepted connections in their handshakes, and sessions, each in the slot its
    // LiveClient::slot_ names; a free slot is null and listed in free_slots_. Slots, not
    // a map keyed by the pointer: a map's node and bucket cost every held client some
    // 40 bytes (docs/design.md, "Memory per connection").
    void keep(std::unique_ptr<LiveClient> client);
    std::vector<std::unique_ptr<LiveClient>> clients_;
    std::vector<uint32_t> free_slots_;
    size_t client_count_ = 0;
    std::vector<std::unique_ptr<LiveClient>> finished_;
    uint64_t next_serial_ = 0;
    bool stopping_ = false;
    uint64_t last_accept_error_log_ = 0;
    // Connections accepted in this turn of the loop, and the listeners with one waiting.
    static constexpr int kAcceptsPerTurn = 64;
    int accepted_this_turn_ = 0;
    std::vector<uv_stream_t*> deferred_;
    int fd_capacity_ = 0;
    uint64_t fd_capacity_read_at_ = 0;
    bool fd_capacity_known_ = false;
    uint64_t base_fds_ = 0;
    uint64_t last_trim_ = 0;
};

}  // namespace smtpscreen
