#include "dnsbl/dns_client.h"

#include <ares.h>
#include <arpa/nameser.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "core/text.h"
#include "core/uv_handle.h"
#include "dnsbl/dns_message.h"
#include "dnsbl/query_table.h"
#include "dnsbl/zone_health.h"

namespace smtpscreen {

namespace {

// SO_RCVBUF for the c-ares sockets (see init_channel).
constexpr int kSocketReceiveBuffer = 4 << 20;

// A client with more PTR names than this is verified against the first few only, as
// each name costs a forward query (Postfix's smtpd looks at one).
constexpr std::size_t kMaxVerifiedNames = 4;

// Reasons that are not the server's answer and need no log line per query.
constexpr std::string_view kReasonSkipped = "zone skipped after repeated timeouts";
constexpr std::string_view kReasonClosed = "resolver closed";
constexpr std::string_view kReasonTimeout = "timeout";

void init_cares_library() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (int rc = ares_library_init(ARES_LIB_INIT_ALL); rc != ARES_SUCCESS) {
            throw std::runtime_error(std::string("dnsbl: c-ares library init failed: ") + ares_strerror(rc));
        }
    });
}

std::string failure_reason(int status) {
    switch (status) {
    case ARES_ETIMEOUT: return std::string(kReasonTimeout);
    case ARES_ESERVFAIL: return "SERVFAIL";
    case ARES_EREFUSED: return "REFUSED";
    case ARES_EFORMERR: return "FORMERR";
    case ARES_ENOTIMP: return "NOTIMP";
    case ARES_EBADRESP: return "malformed reply";
    case ARES_ECONNREFUSED: return "connection refused";
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED: return std::string(kReasonClosed);
    default: return ares_strerror(status);
    }
}

DnsblReply failed(std::string reason) {
    DnsblReply reply;
    reply.status = DnsblReply::Status::Failed;
    reply.error = std::move(reason);
    return reply;
}

// The reply c-ares handed over for `asked`, read whole: nullopt with *error set when it
// breaks the format or answers another question. c-ares already matched its id and
// question; checking the question again costs nothing and keeps the client honest if
// that ever changes.
std::optional<dns::Message> read_reply(const unsigned char* abuf, int alen, const dns::Question& asked,
                                       std::string* error) {
    if (abuf == nullptr || alen < 0) {
        *error = "no reply";
        return std::nullopt;
    }
    auto reply = dns::parse_message({abuf, static_cast<std::size_t>(alen)}, error);
    if (!reply) return std::nullopt;
    // The id is not checked here: ares_send() puts its own id in the query.
    if (auto wrong = dns::mismatch(*reply, asked, std::nullopt); !wrong.empty()) {
        *error = std::move(wrong);
        return std::nullopt;
    }
    return reply;
}

DnsblReply not_listed(const dns::Message& reply) {
    DnsblReply out;
    out.ttl = dns::negative_ttl(reply);
    return out;
}

DnsblReply dnsbl_reply(int status, const unsigned char* abuf, int alen, const dns::Question& asked) {
    if (status != ARES_SUCCESS) return failed(failure_reason(status));
    std::string error;
    auto reply = read_reply(abuf, alen, asked, &error);
    if (!reply) return failed("malformed reply: " + error);
    if (reply->rcode == dns::kRcodeNxDomain) return not_listed(*reply);
    if (reply->rcode != dns::kRcodeNoError) return failed(dns::rcode_name(reply->rcode));
    // No A record for the name (nothing, or only a CNAME or another type): not listed.
    const auto found = dns::answers_to_question(*reply, dns::kTypeA);
    if (found.records.empty()) return not_listed(*reply);

    DnsblReply out;
    out.status = DnsblReply::Status::Listed;
    out.ttl = found.ttl;
    for (const dns::Record* rec : found.records) {
        const auto* b = reinterpret_cast<const unsigned char*>(rec->rdata.data());
        out.addresses.push_back(static_cast<uint32_t>(b[0]) << 24 | static_cast<uint32_t>(b[1]) << 16 |
                                static_cast<uint32_t>(b[2]) << 8 | b[3]);
    }
    return out;
}

// Postfix's valid_hostname(), minus its leniency for '_': labels of letters, digits and
// inner hyphens, 1..63 long, at most 255 in all, and not all digits (a "name" such as
// 1.2.3.4 would pass for an address).
bool valid_hostname(std::string_view name) {
    if (name.empty() || name.size() > 255) return false;
    bool non_numeric = false;
    std::size_t label = 0;
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool last = i + 1 == name.size();
        if (c == '.') {
            if (label == 0 || last) return false;
            label = 0;
            continue;
        }
        if (c == '-') {
            if (label == 0 || last || name[i + 1] == '.') return false;
            non_numeric = true;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            non_numeric = true;
        } else if (c < '0' || c > '9') {
            return false;
        }
        if (++label > 63) return false;
    }
    return non_numeric;
}

// The PTR names of a reply, lower case, in answer order, for its question or for the
// name a CNAME chain from it leads to. Escaped bytes ("\032", "\.") stay escaped, and
// valid_hostname() then refuses the name.
std::vector<std::string> ptr_names(int status, const unsigned char* abuf, int alen, const dns::Question& asked) {
    std::vector<std::string> names;
    std::string error;
    if (status != ARES_SUCCESS) return names;
    auto reply = read_reply(abuf, alen, asked, &error);
    if (!reply || reply->rcode != dns::kRcodeNoError) return names;
    for (const dns::Record* rec : dns::answers_to_question(*reply, dns::kTypePtr).records) {
        names.push_back(ascii_lower(rec->target));
    }
    return names;
}

// Whether the A (4 bytes) or AAAA (16 bytes) answer to `asked` holds `address`, raw
// network order.
bool answer_has_address(int status, const unsigned char* abuf, int alen, const dns::Question& asked,
                        std::string_view address) {
    std::string error;
    if (status != ARES_SUCCESS) return false;
    auto reply = read_reply(abuf, alen, asked, &error);
    if (!reply || reply->rcode != dns::kRcodeNoError) return false;
    const auto found = dns::answers_to_question(*reply, asked.type);
    return std::any_of(found.records.begin(), found.records.end(),
                       [&](const dns::Record* rec) { return rec->rdata == address; });
}

// ares_channel is a pointer type; this owns one and destroys it once.
struct ChannelDeleter {
    void operator()(ares_channeldata* channel) const { ares_destroy(channel); }
};
using Channel = std::unique_ptr<ares_channeldata, ChannelDeleter>;

// What a DnsSubscription refers to: a verified-name lookup, with everyone waiting for
// its answer.
struct Pending {
    virtual ~Pending() = default;
    virtual void unsubscribe(uint64_t id) = 0;
    // Runs each subscriber's callback once with the answer; from the idle handler only.
    virtual void deliver() = 0;

    uint64_t deadline = 0;  // uv_now() milliseconds
    bool done = false;
};

template <typename Answer>
struct Waiting : Pending {
    struct Subscriber {
        uint64_t id;
        std::function<void(const Answer&)> callback;
    };
    // Made when the answer comes: a lookup in flight carries none.
    std::unique_ptr<Answer> answer;
    std::vector<Subscriber> subscribers;

    void unsubscribe(uint64_t id) override {
        std::erase_if(subscribers, [id](const Subscriber& s) { return s.id == id; });
    }
    void deliver() override {
        // A callback may cancel other subscribers: take them one by one.
        while (!subscribers.empty()) {
            auto subscriber = std::move(subscribers.front());
            subscribers.erase(subscribers.begin());
            subscriber.callback(*answer);
        }
    }
};

// A DNSBL answer on its way to the query's subscribers, from the loop's idle turn.
struct DnsblAnswer {
    DnsblAnswer(DnsblReply r, DnsblQuery& query);
    ~DnsblAnswer();
    DnsblAnswer(const DnsblAnswer&) = delete;
    DnsblAnswer& operator=(const DnsblAnswer&) = delete;
    void deliver();

    DnsblReply reply;
    DnsblSubscription* subscribers = nullptr;
};

// The question a query asks.
std::string query_name(const DnsblQuery& query);

// One client's PTR question, then an A or AAAA question per name it gave.
struct NameLookup : Waiting<std::string> {
    enum Confirmed : int8_t { Unknown, No, Yes };
    std::string key;      // the client's address as text
    std::string address;  // and as raw bytes: 4 or 16
    std::string ptr_name;  // "4.3.2.1.in-addr.arpa"
    std::vector<std::string> names;   // valid PTR names, in answer order
    std::vector<Confirmed> confirmed;  // per name
};

}  // namespace

// A DNSBL zone this resolver has asked of, and how it has been answering (ZoneHealth).
struct DnsblZone {
    DnsClient::Impl& resolver;  // for c-ares's callback, which gets the query only
    const std::string* name;    // lower case: the key of the resolver's table
    ZoneHealth health;
};

// The resolver's side of a DnsblSubscription: the list of a query's subscribers, which
// moves to its answer when it comes.
struct DnsblSubscribers {
    static void append(DnsblSubscription*& head, DnsblSubscription& s, DnsblWaiter& waiter) {
        DnsblSubscription** link = &head;
        while (*link) link = &(*link)->next_;
        *link = &s;
        s.list_ = &head;
        s.next_ = nullptr;
        s.waiter_ = &waiter;
    }
    // Every subscriber of `from`, in order, to the empty list `to`.
    static void move_all(DnsblSubscription*& from, DnsblSubscription*& to) {
        to = std::exchange(from, nullptr);
        for (DnsblSubscription* s = to; s; s = s->next_) s->list_ = &to;
    }
    // Takes the first subscriber off the list, then tells its waiter.
    static void tell_first(DnsblSubscription*& head, const DnsblReply& reply) {
        DnsblSubscription& s = *head;
        head = s.next_;
        DnsblWaiter* waiter = std::exchange(s.waiter_, nullptr);
        s.list_ = nullptr;
        s.next_ = nullptr;
        waiter->dnsbl_reply(s, reply);
    }
    // Leaves every subscriber untold: its answer goes with the resolver.
    static void drop_all(DnsblSubscription*& head) {
        while (head) {
            DnsblSubscription& s = *head;
            head = s.next_;
            s.list_ = nullptr;
            s.next_ = nullptr;
            s.waiter_ = nullptr;
        }
    }
};

namespace {

std::string query_name(const DnsblQuery& query) { return reverse_name(query.address()) + "." + *query.zone->name; }

DnsblAnswer::DnsblAnswer(DnsblReply r, DnsblQuery& query) : reply(std::move(r)) {
    DnsblSubscribers::move_all(query.subscribers, subscribers);
}

DnsblAnswer::~DnsblAnswer() { DnsblSubscribers::drop_all(subscribers); }

void DnsblAnswer::deliver() {
    // A waiter may cancel other subscribers: take them one by one.
    while (subscribers) DnsblSubscribers::tell_first(subscribers, reply);
}

}  // namespace

struct DnsClient::Impl {
    Impl(uv_loop_t* loop, const std::vector<Endpoint>& servers, std::chrono::milliseconds timeout, Logger& log);
    ~Impl();

    DnsblSubscription lookup_dnsbl(const Endpoint& client, const std::string& zone, DnsblWaiter& waiter);
    DnsSubscription lookup_verified_name(const Endpoint& client, NameCallback cb);
    void close();

private:
    // What c-ares carries for one ares_send of a verified-name lookup (a DNSBL query
    // carries the DnsblQuery itself): the lookup may be over by then, so only a weak
    // reference. Index -1 for its PTR question, else the index of the name whose
    // addresses were asked for.
    struct NameTicket {
        Impl* impl;
        std::weak_ptr<NameLookup> lookup;
        int index;
    };

    void init_channel(const std::vector<Endpoint>& servers);
    void set_servers(const std::vector<Endpoint>& servers);
    std::string send(const dns::Question& question, ares_callback callback, void* arg);
    void start_query(std::unique_ptr<DnsblQuery> query);
    void complete(DnsblQuery& query, DnsblReply reply);
    void note_zone_health(const DnsblQuery& query, const DnsblReply& reply);
    DnsblZone* zone_of(const std::string& name);
    bool zone_skipped(const std::string& zone);
    void settle(const std::shared_ptr<NameLookup>& lookup, bool final);
    void finish_name(const std::shared_ptr<NameLookup>& lookup, std::string name);
    void deliver_later(std::shared_ptr<Pending> pending);
    void deliver_later(std::unique_ptr<DnsblAnswer> answer);
    void wake_idle();
    void deliver_ready();
    void expire_deadlines();
    void arm_timer();
    void watch_socket(ares_socket_t fd, bool readable, bool writable);
    template <typename T, typename Cb>
    DnsSubscription subscribe(const std::shared_ptr<T>& pending, Cb cb);

    static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
    static void on_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
    static void on_ptr_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
    static void on_forward_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
    static void on_poll(uv_poll_t* handle, int status, int events);
    static void on_timer(uv_timer_t* handle);
    static void on_idle(uv_idle_t* handle);

    uv_loop_t* loop_;
    Logger& log_;
    uint64_t timeout_ms_;
    UvHandle<uv_timer_t> timer_;  // c-ares retransmits and our own deadlines
    UvHandle<uv_idle_t> idle_;    // delivers answers outside c-ares and outside lookup_dnsbl()
    std::map<ares_socket_t, UvHandle<uv_poll_t>> polls_;
    // DNSBL queries asked and not answered yet; c-ares owns each from ares_send until
    // its callback, which frees it.
    DnsblQueryTable queries_;
    std::map<std::string, std::shared_ptr<NameLookup>> names_in_flight_;  // by client address
    std::deque<std::weak_ptr<Pending>> deadlines_;  // name lookups; start order == deadline order
    std::deque<std::shared_ptr<Pending>> ready_;
    std::deque<std::unique_ptr<DnsblAnswer>> dnsbl_ready_;
    std::map<std::string, DnsblZone> zones_;
    uint64_t next_id_ = 0;
    bool closed_ = false;
    // Last, so it is destroyed first: ares_destroy calls back into the members above.
    Channel channel_;
};

DnsClient::Impl::Impl(uv_loop_t* loop, const std::vector<Endpoint>& servers,
                          std::chrono::milliseconds timeout, Logger& log)
    : loop_(loop),
      log_(log),
      timeout_ms_(static_cast<uint64_t>(std::max<int64_t>(timeout.count(), 1))),
      timer_([loop](uv_timer_t* t) { return uv_timer_init(loop, t); }, this),
      idle_([loop](uv_idle_t* i) { return uv_idle_init(loop, i); }, this) {
    if (!timer_ || !idle_) throw std::runtime_error("dnsbl: cannot create libuv timer or idle handle");
    init_cares_library();
    init_channel(servers);
}

DnsClient::Impl::~Impl() {
    close();
    // Answers still queued are dropped: their owners are being torn down with us.
    ready_.clear();
    dnsbl_ready_.clear();
    idle_.close();
}

void DnsClient::Impl::init_channel(const std::vector<Endpoint>& servers) {
    ares_options options{};
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_SOCK_RCVBUF;
    // Without NOCHECKRESP, c-ares 1.18 swallows SERVFAIL and REFUSED, retries, and
    // reports "connection refused"; the log must name what the server really said.
    options.flags = ARES_FLAG_NOCHECKRESP;
    options.sock_state_cb = &Impl::on_sock_state;
    options.sock_state_cb_data = this;
    // c-ares doubles the per-try timeout on each round over the servers: with two
    // tries, t + 2t = 3t, so t = timeout / 3 keeps a lookup within dnsbl.timeout for a
    // single server. With more servers the deadline below cuts it short.
    options.tries = 2;
    // A burst of new clients sends thousands of queries at once, and their answers come
    // back while the loop is busy accepting: the default receive buffer (~200 KiB, a few
    // hundred datagrams) overflows and the lost answers become timeouts, so listed
    // clients count as not listed. The kernel caps this at net.core.rmem_max.
    options.socket_receive_buffer_size = kSocketReceiveBuffer;
    options.timeout = static_cast<int>(std::max<uint64_t>(timeout_ms_ / 3, 1));
    ares_channel channel = nullptr;
    if (int rc = ares_init_options(&channel, &options, mask); rc != ARES_SUCCESS) {
        throw std::runtime_error(
            std::string("dnsbl: cannot initialise c-ares (check /etc/resolv.conf or set dnsbl.servers): ") +
            ares_strerror(rc));
    }
    channel_.reset(channel);
    if (!servers.empty()) set_servers(servers);
}

void DnsClient::Impl::set_servers(const std::vector<Endpoint>& servers) {
    std::vector<ares_addr_port_node> nodes(servers.size());
    for (std::size_t i = 0; i < servers.size(); ++i) {
        auto& node = nodes[i];
        const auto raw = servers[i].raw();
        node.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
        node.family = servers[i].family();
        if (servers[i].is_v6()) {
            std::memcpy(&node.addr.addr6, raw.data(), std::min(raw.size(), sizeof node.addr.addr6));
        } else {
            std::memcpy(&node.addr.addr4, raw.data(), std::min(raw.size(), sizeof node.addr.addr4));
        }
        const int port = servers[i].port() != 0 ? servers[i].port() : NAMESERVER_PORT;
        node.udp_port = port;
        node.tcp_port = port;
    }
    if (int rc = ares_set_servers_ports(channel_.get(), nodes.data()); rc != ARES_SUCCESS) {
        throw std::runtime_error(std::string("dnsbl: cannot use dnsbl.servers: ") + ares_strerror(rc));
    }
}

template <typename T, typename Cb>
DnsSubscription DnsClient::Impl::subscribe(const std::shared_ptr<T>& pending, Cb cb) {
    const uint64_t id = ++next_id_;
    pending->subscribers.push_back({id, std::move(cb)});
    // Through Pending, so that DnsSubscription::cancel() can cast the void back.
    const std::shared_ptr<Pending> base = pending;
    return DnsSubscription(std::weak_ptr<void>(base), id);
}

DnsblSubscription DnsClient::Impl::lookup_dnsbl(const Endpoint& client, const std::string& zone,
                                                 DnsblWaiter& waiter) {
    const std::string zone_name = ascii_lower(zone);
    DnsblZone* zone_key = zone_of(zone_name);
    const std::string_view address = client.raw();
    DnsblSubscription subscription;
    if (DnsblQuery* asked = queries_.find(address, zone_key)) {
        DnsblSubscribers::append(asked->subscribers, subscription, waiter);
        return subscription;
    }
    auto query = std::make_unique<DnsblQuery>();
    query->address_len = static_cast<uint8_t>(std::min(address.size(), query->address_bytes.size()));
    std::memcpy(query->address_bytes.data(), address.data(), query->address_len);
    query->zone = zone_key;
    DnsblSubscribers::append(query->subscribers, subscription, waiter);
    if (closed_) {
        // Neither asked nor logged: the answer goes to the subscriber, the query away.
        deliver_later(std::make_unique<DnsblAnswer>(failed(std::string(kReasonClosed)), *query));
    } else if (zone_skipped(zone_name)) {
        deliver_later(std::make_unique<DnsblAnswer>(failed(std::string(kReasonSkipped)), *query));
    } else {
        start_query(std::move(query));
    }
    return subscription;
}

// Hands c-ares a query built here, so that the question the reply is checked against is
// the one that went out. `callback` owns `arg` from then on, unless this returns why the
// question cannot be asked (a name that cannot be a DNS name).
std::string DnsClient::Impl::send(const dns::Question& question, ares_callback callback, void* arg) {
    std::string error;
    // Id 0: ares_send() puts its own in, and matches the reply by it.
    const auto query = dns::build_query(0, question.name, question.type, &error);
    if (!query) return error;
    // May call back at once (e.g. out of memory); the callbacks only queue their answers.
    ares_send(channel_.get(), reinterpret_cast<const unsigned char*>(query->data()), static_cast<int>(query->size()),
              callback, arg);
    return {};
}

void DnsClient::Impl::start_query(std::unique_ptr<DnsblQuery> query) {
    query->set_sent(uv_now(loop_));
    queries_.insert(*query);
    if (auto error = send({query_name(*query), dns::kTypeA}, &Impl::on_answer, query.get()); !error.empty()) {
        complete(*query, failed("cannot ask: " + error));
        return;
    }
    // c-ares's now, and perhaps freed already (its callback may come from within
    // ares_send): not a word of it after this.
    query.release();
    arm_timer();
}

void DnsClient::Impl::on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<DnsblQuery> query(static_cast<DnsblQuery*>(arg));
    if (query->done) return;  // expired, or the resolver closed: its subscribers were told
    query->zone->resolver.complete(*query, dnsbl_reply(status, abuf, alen, {query_name(*query), dns::kTypeA}));
}

// Out of the table, and its subscribers told from the loop's next idle turn. The query
// itself stays c-ares's until its callback.
void DnsClient::Impl::complete(DnsblQuery& query, DnsblReply reply) {
    if (query.done) return;
    query.done = true;
    queries_.erase(query);
    const auto& error = reply.error;
    if (reply.status == DnsblReply::Status::Failed && error != kReasonSkipped && error != kReasonClosed) {
        log_.warn("dnsbl query {} failed: {}", query_name(query), error);
    }
    if (error != kReasonSkipped && error != kReasonClosed) note_zone_health(query, reply);
    deliver_later(std::make_unique<DnsblAnswer>(std::move(reply), query));
}

void DnsClient::Impl::note_zone_health(const DnsblQuery& query, const DnsblReply& reply) {
    auto& health = query.zone->health;
    const std::string& zone = *query.zone->name;
    const uint64_t now = uv_now(loop_);
    if (reply.status != DnsblReply::Status::Failed || reply.error != kReasonTimeout) {
        if (health.answered(now)) log_.info("dnsbl zone {} answers again; querying it for every client", zone);
        return;
    }
    if (health.timed_out(query.sent_at(now), now)) {
        log_.warn("dnsbl zone {} timed out {} times in a row; skipping it for {}s "
                  "(its lookups count as not listed; check dnsbl.servers and the zone name)",
                  zone, health.silent_timeouts(), ZoneHealth::kSkipMillis / 1000);
    }
}

DnsblZone* DnsClient::Impl::zone_of(const std::string& name) {
    auto it = zones_.find(name);
    if (it == zones_.end()) {
        it = zones_.emplace(name, DnsblZone{*this, nullptr, {}}).first;
        it->second.name = &it->first;
    }
    return &it->second;
}

bool DnsClient::Impl::zone_skipped(const std::string& zone) {
    auto it = zones_.find(zone);
    return it != zones_.end() && it->second.health.skipped(uv_now(loop_));
}

DnsSubscription DnsClient::Impl::lookup_verified_name(const Endpoint& client, NameCallback cb) {
    const std::string key = client.ip();
    if (auto it = names_in_flight_.find(key); it != names_in_flight_.end()) return subscribe(it->second, std::move(cb));

    auto lookup = std::make_shared<NameLookup>();
    lookup->key = key;
    lookup->address = std::string(client.raw());
    auto subscription = subscribe(lookup, std::move(cb));
    if (closed_ || !client.valid()) {
        finish_name(lookup, {});
        return subscription;
    }
    lookup->deadline = uv_now(loop_) + timeout_ms_;
    names_in_flight_[key] = lookup;
    deadlines_.push_back(lookup);
    lookup->ptr_name = reverse_name(client) + (client.is_v6() ? ".ip6.arpa" : ".in-addr.arpa");
    auto ticket = std::make_unique<NameTicket>(NameTicket{this, lookup, -1});
    if (auto error = send({lookup->ptr_name, dns::kTypePtr}, &Impl::on_ptr_answer, ticket.get()); !error.empty()) {
        finish_name(lookup, {});
    } else {
        ticket.release();
    }
    arm_timer();
    return subscription;
}

void DnsClient::Impl::on_ptr_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<NameTicket> ticket(static_cast<NameTicket*>(arg));
    auto lookup = ticket->lookup.lock();
    if (!lookup || lookup->done) return;
    Impl* impl = ticket->impl;
    // ares_destroy() answers with ARES_EDESTRUCTION while channel_ is already gone.
    if (status != ARES_SUCCESS || impl->closed_ || !impl->channel_) {
        impl->finish_name(lookup, {});
        return;
    }
    for (auto& name : ptr_names(status, abuf, alen, {lookup->ptr_name, dns::kTypePtr})) {
        const bool seen = std::find(lookup->names.begin(), lookup->names.end(), name) != lookup->names.end();
        if (!valid_hostname(name) || seen) {
            continue;
        }
        lookup->names.push_back(std::move(name));
        if (lookup->names.size() == kMaxVerifiedNames) break;
    }
    if (lookup->names.empty()) {
        impl->finish_name(lookup, {});
        return;
    }
    lookup->confirmed.assign(lookup->names.size(), NameLookup::Unknown);
    const uint16_t type = lookup->address.size() == 16 ? dns::kTypeAaaa : dns::kTypeA;
    // Called from ares_process_fd (or inline from ares_send): the caller re-arms the timer.
    for (std::size_t i = 0; i < lookup->names.size() && !lookup->done; ++i) {
        auto ticket = std::make_unique<NameTicket>(NameTicket{impl, lookup, static_cast<int>(i)});
        if (auto error = impl->send({lookup->names[i], type}, &Impl::on_forward_answer, ticket.get()); error.empty()) {
            ticket.release();
        } else {
            lookup->confirmed[i] = NameLookup::No;  // valid_hostname() passed it, so not expected
            impl->settle(lookup, false);
        }
    }
}

void DnsClient::Impl::on_forward_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<NameTicket> ticket(static_cast<NameTicket*>(arg));
    auto lookup = ticket->lookup.lock();
    if (!lookup || lookup->done) return;
    const auto index = static_cast<std::size_t>(ticket->index);
    if (index >= lookup->confirmed.size()) return;
    const uint16_t type = lookup->address.size() == 16 ? dns::kTypeAaaa : dns::kTypeA;
    const bool match = answer_has_address(status, abuf, alen, {lookup->names[index], type}, lookup->address);
    lookup->confirmed[index] = match ? NameLookup::Yes : NameLookup::No;
    ticket->impl->settle(lookup, false);
}

// The first confirmed name in PTR order, once every name before it is known not to be;
// at the deadline (final) whatever is confirmed by then.
void DnsClient::Impl::settle(const std::shared_ptr<NameLookup>& lookup, bool final) {
    for (std::size_t i = 0; i < lookup->names.size(); ++i) {
        if (lookup->confirmed[i] == NameLookup::Yes) {
            finish_name(lookup, lookup->names[i]);
            return;
        }
        if (lookup->confirmed[i] == NameLookup::Unknown && !final) return;
    }
    finish_name(lookup, {});
}

void DnsClient::Impl::finish_name(const std::shared_ptr<NameLookup>& lookup, std::string name) {
    if (lookup->done) return;
    lookup->done = true;
    lookup->answer = std::make_unique<std::string>(std::move(name));
    if (auto it = names_in_flight_.find(lookup->key); it != names_in_flight_.end() && it->second == lookup) {
        names_in_flight_.erase(it);
    }
    deliver_later(lookup);
}

void DnsClient::Impl::deliver_later(std::shared_ptr<Pending> pending) {
    ready_.push_back(std::move(pending));
    wake_idle();
}

void DnsClient::Impl::deliver_later(std::unique_ptr<DnsblAnswer> answer) {
    dnsbl_ready_.push_back(std::move(answer));
    wake_idle();
}

void DnsClient::Impl::wake_idle() {
    if (idle_) uv_idle_start(idle_.get(), &Impl::on_idle);
}

void DnsClient::Impl::on_idle(uv_idle_t* handle) {
    if (auto* impl = static_cast<Impl*>(handle->data)) impl->deliver_ready();
}

void DnsClient::Impl::deliver_ready() {
    // Answers queued by the callbacks below wait for the next loop iteration.
    auto batch = std::exchange(ready_, {});
    auto dnsbl_batch = std::exchange(dnsbl_ready_, {});
    for (auto& answer : dnsbl_batch) answer->deliver();
    for (auto& pending : batch) pending->deliver();
    if (!idle_ || !ready_.empty() || !dnsbl_ready_.empty()) return;
    if (closed_) {
        idle_.close();
    } else {
        uv_idle_stop(idle_.get());
    }
}

void DnsClient::Impl::expire_deadlines() {
    const uint64_t now = uv_now(loop_);
    // c-ares may still answer one later: on_answer then finds it done.
    while (DnsblQuery* oldest = queries_.oldest()) {
        if (oldest->sent_at(now) + timeout_ms_ > now) break;
        complete(*oldest, failed(std::string(kReasonTimeout)));
    }
    while (!deadlines_.empty()) {
        auto pending = deadlines_.front().lock();
        if (pending && !pending->done && pending->deadline > now) break;
        deadlines_.pop_front();
        if (!pending || pending->done) continue;
        // c-ares may still answer later; the NameTicket then finds the lookup done.
        if (auto lookup = std::dynamic_pointer_cast<NameLookup>(pending)) settle(lookup, true);
    }
}

void DnsClient::Impl::arm_timer() {
    if (!timer_ || !channel_) return;
    uint64_t wait = std::numeric_limits<uint64_t>::max();
    timeval tv{};
    if (ares_timeout(channel_.get(), nullptr, &tv) != nullptr) {
        // Round up: waking before c-ares's own clock says the try is over would spin.
        wait = static_cast<uint64_t>(tv.tv_sec) * 1000 + (static_cast<uint64_t>(tv.tv_usec) + 999) / 1000;
    }
    if (const DnsblQuery* oldest = queries_.oldest()) {
        const uint64_t now = uv_now(loop_);
        const uint64_t due = oldest->sent_at(now) + timeout_ms_;
        wait = std::min(wait, due > now ? due - now : 0);
    }
    while (!deadlines_.empty()) {
        auto pending = deadlines_.front().lock();
        if (pending && !pending->done) {
            const uint64_t now = uv_now(loop_);
            wait = std::min(wait, pending->deadline > now ? pending->deadline - now : 0);
            break;
        }
        deadlines_.pop_front();
    }
    if (wait == std::numeric_limits<uint64_t>::max()) {
        uv_timer_stop(timer_.get());
    } else {
        uv_timer_start(timer_.get(), &Impl::on_timer, wait, 0);
    }
}

void DnsClient::Impl::on_timer(uv_timer_t* handle) {
    auto* impl = static_cast<Impl*>(handle->data);
    if (!impl || !impl->channel_) return;
    // libuv runs timers before it polls, so after a busy iteration (a burst of accepts)
    // answers may be waiting unread in the sockets: read them before any query is
    // declared timed out, or a zone that answered would look dead (ZoneHealth). c-ares
    // reads each socket until it would block, then handles its own retransmits.
    std::vector<ares_socket_t> sockets;
    for (const auto& [fd, poll] : impl->polls_) sockets.push_back(fd);
    for (ares_socket_t fd : sockets) {
        if (!impl->channel_) return;
        ares_process_fd(impl->channel_.get(), fd, ARES_SOCKET_BAD);
    }
    if (sockets.empty()) ares_process_fd(impl->channel_.get(), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    impl->expire_deadlines();
    impl->arm_timer();
}

void DnsClient::Impl::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<Impl*>(data)->watch_socket(fd, readable != 0, writable != 0);
}

void DnsClient::Impl::watch_socket(ares_socket_t fd, bool readable, bool writable) {
    if (!readable && !writable) {
        // c-ares closes the socket right after this call; the poll must go first.
        polls_.erase(fd);
        return;
    }
    auto it = polls_.find(fd);
    if (it == polls_.end()) {
        UvHandle<uv_poll_t> poll([&](uv_poll_t* p) { return uv_poll_init_socket(loop_, p, fd); }, this);
        if (!poll) {
            log_.warn("dnsbl: cannot watch c-ares socket {}; its queries will time out", fd);
            return;
        }
        it = polls_.emplace(fd, std::move(poll)).first;
    }
    const int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    uv_poll_start(it->second.get(), events, &Impl::on_poll);
}

void DnsClient::Impl::on_poll(uv_poll_t* handle, int status, int events) {
    auto* impl = static_cast<Impl*>(handle->data);
    if (!impl || !impl->channel_) return;
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(handle), &fd) != 0) return;
    // On a poll error let c-ares read and write, so it sees the socket error itself.
    const bool error = status < 0;
    ares_process_fd(impl->channel_.get(), (error || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD,
                    (error || (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD);
    impl->arm_timer();
}

void DnsClient::Impl::close() {
    if (closed_) return;
    closed_ = true;
    // ares_destroy answers every pending query (ARES_EDESTRUCTION → Failed, queued) and
    // reports each socket closed, which closes its poll handle.
    channel_.reset();
    // Every lookup still waiting had a question out, so ares_destroy answered it; this
    // is in case one did not.
    for (auto names = std::exchange(names_in_flight_, {}); auto& [key, lookup] : names) finish_name(lookup, {});
    deadlines_.clear();
    polls_.clear();
    timer_.close();
    // The idle handle stays until the queued answers are delivered.
    if (ready_.empty() && dnsbl_ready_.empty()) idle_.close();
}

// --- DnsClient ------------------------------------------------------------------

DnsClient::DnsClient(uv_loop_t* loop, const std::vector<Endpoint>& servers, std::chrono::milliseconds timeout,
                     Logger& log)
    : impl_(std::make_unique<Impl>(loop, servers, timeout, log)) {}

DnsClient::~DnsClient() = default;

DnsblSubscription DnsClient::lookup_dnsbl(const Endpoint& client, const std::string& zone, DnsblWaiter& waiter) {
    return impl_->lookup_dnsbl(client, zone, waiter);
}

DnsSubscription DnsClient::lookup_verified_name(const Endpoint& client, NameCallback cb) {
    return impl_->lookup_verified_name(client, std::move(cb));
}

void DnsClient::close() { impl_->close(); }

// --- DnsSubscription --------------------------------------------------------------

DnsSubscription::DnsSubscription(DnsSubscription&& other) noexcept
    : query_(std::move(other.query_)), id_(std::exchange(other.id_, 0)) {
    other.query_.reset();
}

DnsSubscription& DnsSubscription::operator=(DnsSubscription&& other) noexcept {
    if (this != &other) {
        cancel();
        query_ = std::move(other.query_);
        other.query_.reset();
        id_ = std::exchange(other.id_, 0);
    }
    return *this;
}

DnsSubscription::~DnsSubscription() { cancel(); }

void DnsSubscription::cancel() {
    // Every subscription the resolver hands out refers to a Pending (see subscribe()).
    if (auto pending = std::static_pointer_cast<Pending>(query_.lock())) pending->unsubscribe(id_);
    query_.reset();
}

// --- DnsblSubscription ------------------------------------------------------------

void DnsblSubscription::take(DnsblSubscription& other) {
    list_ = std::exchange(other.list_, nullptr);
    next_ = std::exchange(other.next_, nullptr);
    waiter_ = std::exchange(other.waiter_, nullptr);
    if (!list_) return;
    for (DnsblSubscription** link = list_; *link; link = &(*link)->next_) {
        if (*link == &other) {
            *link = this;
            return;
        }
    }
}

DnsblSubscription& DnsblSubscription::operator=(DnsblSubscription&& other) noexcept {
    if (this != &other) {
        cancel();
        take(other);
    }
    return *this;
}

void DnsblSubscription::cancel() {
    if (!list_) return;
    for (DnsblSubscription** link = list_; *link; link = &(*link)->next_) {
        if (*link == this) {
            *link = next_;
            break;
        }
    }
    list_ = nullptr;
    next_ = nullptr;
    waiter_ = nullptr;
}

}  // namespace smtpscreen
