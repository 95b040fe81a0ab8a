#pragma once
// The DNS client of a worker: DNSBL lookups (lookup_dnsbl) and the verified client
// name for XCLIENT NAME (lookup_verified_name: PTR, then forward confirmation). c-ares
// sends the queries and is driven by the caller's libuv loop: its sockets are watched
// with uv_poll and its timeouts with one uv_timer; there is no extra thread and no
// blocking call. One client per loop thread.
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/address.h"
#include "core/log.h"

namespace smtpscreen {

struct DnsblReply {
    enum class Status { Listed, NotListed, Failed };
    Status status = Status::NotListed;
    std::vector<uint32_t> addresses;  // A records, host byte order (127.0.0.2 == 0x7f000002)
    uint32_t ttl = 0;                 // smallest TTL of the answer (or of the SOA for NXDOMAIN), seconds
    std::string error;                // for Failed: "timeout", "SERVFAIL", "REFUSED", "malformed reply",
                                      // "connection refused", "zone skipped after repeated timeouts", ...
};

class DnsClient;
class DnsblSubscription;

// Told a DNSBL answer (DnsClient::lookup_dnsbl). An object the asker already is, not a
// std::function: tens of thousands of idle clients may each be waiting for one
// (docs/design.md, "Memory per connection").
class DnsblWaiter {
public:
    // `which` is the subscription that asked; it is no longer pending when this runs,
    // and may be destroyed here (so may other subscriptions, not the resolver).
    virtual void dnsbl_reply(DnsblSubscription& which, const DnsblReply& reply) = 0;

protected:
    ~DnsblWaiter() = default;
};

// Where a waiter stands among a DNSBL query's subscribers: a link in the query's own
// list, so that subscribing allocates nothing. Owned by whoever asked; destroying it (or
// calling cancel) guarantees its waiter is not told afterwards, and moving it keeps its
// place. The query may go on for other subscribers.
class DnsblSubscription {
public:
    DnsblSubscription() = default;
    DnsblSubscription(DnsblSubscription&& other) noexcept { take(other); }
    DnsblSubscription& operator=(DnsblSubscription&& other) noexcept;
    ~DnsblSubscription() { cancel(); }
    void cancel();
    // Subscribed and not told yet.
    bool pending() const { return list_ != nullptr; }

private:
    friend struct DnsblSubscribers;  // the resolver's side of the list (dns_client.cpp)
    void take(DnsblSubscription& other);

    // The head of the list it is in (a query's, or an answer's waiting for the loop).
    DnsblSubscription** list_ = nullptr;
    DnsblSubscription* next_ = nullptr;
    DnsblWaiter* waiter_ = nullptr;
};

// Owned by whoever asked a verified-name lookup; destroying it (or calling cancel)
// guarantees the callback will not run afterwards. The underlying lookup may go on for
// other subscribers.
class DnsSubscription {
public:
    DnsSubscription() = default;
    DnsSubscription(DnsSubscription&& other) noexcept;
    DnsSubscription& operator=(DnsSubscription&& other) noexcept;
    ~DnsSubscription();
    void cancel();

private:
    friend class DnsClient;
    DnsSubscription(std::weak_ptr<void> query, uint64_t id) : query_(std::move(query)), id_(id) {}
    std::weak_ptr<void> query_;
    uint64_t id_ = 0;
};

class DnsClient {
public:
    using NameCallback = std::function<void(const std::string& name)>;

    // servers empty: the system resolver (/etc/resolv.conf). timeout bounds one whole
    // lookup (all tries). Throws std::runtime_error naming what failed on c-ares init errors.
    DnsClient(uv_loop_t* loop, const std::vector<Endpoint>& servers, std::chrono::milliseconds timeout,
                  Logger& log);
    ~DnsClient();
    DnsClient(const DnsClient&) = delete;
    DnsClient& operator=(const DnsClient&) = delete;

    // Looks up "<reverse_name(client)>.<zone>" type A. Concurrent lookups for the same
    // (client, zone) share one query. The waiter is told later from the loop, never
    // inline, and must outlive the subscription. A failed or timed-out query is logged
    // once per query (not per subscriber).
    DnsblSubscription lookup_dnsbl(const Endpoint& client, const std::string& zone, DnsblWaiter& waiter);

    // Looks up the PTR names of `client`, then the A (or AAAA for IPv6) records of each
    // name (at most a few names), and answers with the first name, in PTR answer order,
    // whose addresses include the client: Postfix's verified client name. The name is
    // lower case without a trailing dot, and a syntactically valid hostname (letters,
    // digits and inner hyphens in labels of 1..63, at most 255 in all, not all digits);
    // PTR names that are not are ignored. Empty string when there is none, on failure or
    // timeout: the whole lookup, both steps, is bounded by the resolver's timeout.
    // Concurrent lookups for the same client share the queries. The callback runs later
    // from the loop, never inline. Failures are not logged (a client without rDNS is
    // normal).
    DnsSubscription lookup_verified_name(const Endpoint& client, NameCallback cb);

    // Closes the libuv handles; the loop can then finish. Pending waiters get Failed
    // ("resolver closed"), or an empty name, from the loop; a lookup_dnsbl() or
    // lookup_verified_name() after close() is never answered.
    // Destroying the resolver without close() drops pending callbacks instead; it must
    // not be destroyed from inside one of its own callbacks (close() there is fine).
    void close();

private:
    struct Impl;
    friend struct DnsblZone;  // a DNSBL query finds its resolver through its zone
    std::unique_ptr<Impl> impl_;
};

}  // namespace smtpscreen
