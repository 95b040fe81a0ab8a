#pragma once
// The DNSBL/DNSWL test of one client: starts every zone's lookup at once, sums the
// weights of matching sites, and tells when the verdict can no longer change.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"
#include "dnsbl/dns_client.h"
#include "dnsbl/site.h"

namespace smtpscreen {

// What the answers so far say: all a session needs once every zone has answered, so
// that it can free the check and its lookups (docs/design.md, "Memory per connection").
struct DnsblVerdict {
    std::string_view top_zone() const { return top ? std::string_view(*top) : std::string_view(); }

    int score = 0;
    // Some zone failed, timed out, never answered or was skipped: see any_failed().
    bool any_failed = false;
    std::optional<uint32_t> min_ttl;  // see min_ttl()
    const std::string* top = nullptr;  // see top_zone(); a zone of the sites' (the Config's)
};

// Pure scoring, for DnsblCheck and its tests. answers: zone -> A records (host order)
// of the zones that answered Listed. Each matching site adds its weight once, however
// many of its zone's records match (postscreen applies a weight at most once).
int score_answers(const std::vector<DnsblSite>& sites, const std::map<std::string, std::vector<uint32_t>>& answers);
// The zone of the matching site with the highest positive weight (the first one on a
// tie), for the reject reply; empty when no site with a positive weight matches. An
// allowlist (negative weight) is never named as the reason for a rejection.
std::string_view top_listed_zone(const std::vector<DnsblSite>& sites,
                            const std::map<std::string, std::vector<uint32_t>>& answers);
// The same site's own zone string; null when none.
const std::string* top_listed_site_zone(const std::vector<DnsblSite>& sites,
                                        const std::map<std::string, std::vector<uint32_t>>& answers);

// The DNSBL/DNSWL lookups of one client, inside its session (no allocation of their
// own for a configuration of one zone: docs/design.md, "Memory per connection"). The
// session is the lookups' waiter and hands each answer to answer(); the sites (the
// Config's) are passed to every call rather than kept, as the session has them.
class DnsblCheck {
public:
    DnsblCheck();
    ~DnsblCheck();
    DnsblCheck(const DnsblCheck&) = delete;
    DnsblCheck& operator=(const DnsblCheck&) = delete;

    // Starts every zone's lookup at once (sites that share a zone share one). The
    // resolver never tells `waiter` from inside this call. sites must stay as they are
    // until finish().
    void start(DnsClient& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client, DnsblWaiter& waiter);
    // Started, and not finished since.
    bool active() const { return first_lookup_.pending() || more_ != nullptr; }
    // No lookup pending (answered or expired).
    bool complete() const;

    // `which`, one of this check's lookups, answered `reply` (DnsblWaiter::dnsbl_reply):
    // the zone it asked (null when `which` is not one of them) and the verdict so far.
    struct Answer {
        const std::string* zone = nullptr;
        DnsblVerdict verdict;
    };
    Answer answer(const std::vector<DnsblSite>& sites, DnsblSubscription& which, const DnsblReply& reply);
    // True when `score` (the verdict so far) has reached threshold and no unanswered
    // zone carries a negative weight, so no later answer can bring it back below
    // (docs/design.md, step 5).
    bool listed_for_sure(const std::vector<DnsblSite>& sites, int score, int threshold) const;
    // dnsbl.timeout has passed: the zones still unanswered (each told to `unanswered`,
    // for the metrics) count as failed and not listed. Returns the final verdict and
    // finishes the check.
    DnsblVerdict expire(const std::vector<DnsblSite>& sites,
                        const std::function<void(const std::string& zone)>& unanswered);
    // Cancels what is pending and frees what the check holds.
    void finish();

private:
    // What a check of more than one zone keeps between its answers (a check of one
    // zone's one answer is the whole verdict).
    struct More;
    static std::size_t zone_count(const std::vector<DnsblSite>& sites);
    DnsblSubscription* lookup(std::size_t index);
    const DnsblSubscription* lookup(std::size_t index) const;
    bool is_pending(const std::vector<DnsblSite>& sites, const std::string& zone) const;

    // A zone's lookup is pending until it answers or expire(). The first zone's is
    // here, the others' (with what is kept between answers) in More: a check of one
    // zone, as most clients of most configurations have in flight, makes nothing more.
    DnsblSubscription first_lookup_;
    std::unique_ptr<More> more_;
};

}  // namespace smtpscreen
