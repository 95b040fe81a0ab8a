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

class DnsblCheck final : private DnsblWaiter {
public:
    // Told from the loop. An object, not two std::function: a check lives as long as a
    // client's lookups are in flight, and each std::function is 32 bytes of it.
    class Listener {
    public:
        // After each zone answers. The listener may destroy the check here.
        virtual void dnsbl_updated() = 0;
        // Each zone's result first, for the metrics: an answer, or Failed for a zone
        // still unanswered at expire(). The check must not be destroyed here.
        virtual void dnsbl_answered(const std::string& zone, DnsblReply::Status status) {
            (void)zone;
            (void)status;
        }

    protected:
        ~Listener() = default;
    };
    // sites must outlive the check (they belong to the Config the session holds), and
    // so must the listener. Sites that share a zone share one lookup.
    DnsblCheck(DnsClient& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client, Listener& listener);
    DnsblCheck(const DnsblCheck&) = delete;
    DnsblCheck& operator=(const DnsblCheck&) = delete;

    int score() const { return score_; }
    bool complete() const;
    // True when the score has reached threshold and no unanswered zone carries a
    // negative weight, so no later answer can bring it back below (docs/design.md, step 5).
    bool listed_for_sure(int threshold) const;
    // The listed site with the highest (positive) weight, for the reject reply; empty when none.
    std::string top_zone() const { return top_ ? *top_ : std::string(); }
    // Smallest TTL among the answers, seconds (for the cache); nullopt when nothing answered.
    std::optional<uint32_t> min_ttl() const { return has_ttl_ ? std::optional<uint32_t>(min_ttl_) : std::nullopt; }
    // dnsbl.timeout has passed: unanswered zones count as not listed from now on.
    void expire();
    // Some zone failed, timed out, never answered or was skipped (the resolver answers a
    // skipped zone with Failed): "not listed" is then a guess, good enough to let the
    // client in now (docs/design.md, step 5) but not to remember as a pass.
    bool any_failed() const { return any_failed_; }
    DnsblVerdict verdict() const;

private:
    void dnsbl_reply(DnsblSubscription& which, const DnsblReply& reply) override;
    // The zones in the order the sites first name them, each with its lookup.
    std::size_t zone_count() const { return zone_count_; }
    const std::string& zone(std::size_t index) const;
    DnsblSubscription& lookup(std::size_t index) { return index == 0 ? first_lookup_ : more_lookups_[index - 1]; }
    const DnsblSubscription& lookup(std::size_t index) const {
        return index == 0 ? first_lookup_ : more_lookups_[index - 1];
    }
    bool is_pending(const std::string& zone) const;

    const std::vector<DnsblSite>& sites_;
    Listener& listener_;
    // A zone's lookup is pending until it answers or expire(). The first zone's is here,
    // the others' in one array: a check of one zone, as most clients of most
    // configurations have in flight, makes nothing more (docs/design.md, "Memory per
    // connection").
    DnsblSubscription first_lookup_;
    std::unique_ptr<DnsblSubscription[]> more_lookups_;
    // Listed zone -> A records; made at the first listing (most clients are listed nowhere).
    std::unique_ptr<std::map<std::string, std::vector<uint32_t>>> listed_;
    // The verdict so far (verdict()), in 16 bytes and two beside the zone count where a
    // DnsblVerdict takes 24: so the check fits a 96-byte malloc chunk, not a 112-byte one
    // (docs/design.md, "Memory per connection").
    const std::string* top_ = nullptr;
    int score_ = 0;
    uint32_t min_ttl_ = 0;  // when has_ttl_
    uint32_t zone_count_ = 0;
    bool any_failed_ = false;
    bool has_ttl_ = false;
};

}  // namespace smtpscreen
