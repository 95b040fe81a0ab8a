#pragma once
// The DNSBL/DNSWL test of one client: starts every zone's lookup at once, sums the
// weights of matching sites, and tells when the verdict can no longer change.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/address.h"
#include "dnsbl/resolver.h"
#include "dnsbl/site.h"

namespace smtpscreen {

class DnsblCheck {
public:
    // on_update runs (from the loop) after each zone answers.
    DnsblCheck(DnsblResolver& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client,
               std::function<void()> on_update);
    DnsblCheck(const DnsblCheck&) = delete;
    DnsblCheck& operator=(const DnsblCheck&) = delete;

    int score() const { return score_; }
    bool complete() const { return pending_zones_ == 0; }
    // True when the score has reached threshold and no unanswered zone carries a
    // negative weight, so no later answer can bring it back below (SPEC §2 step 5).
    bool listed_for_sure(int threshold) const;
    // The listed site with the highest weight, for the reject reply; empty when none.
    std::string top_zone() const;
    // Smallest TTL among the answers, seconds (for the cache); nullopt when nothing answered.
    std::optional<uint32_t> min_ttl() const;
    // dnsbl.timeout has passed: unanswered zones count as not listed from now on.
    void expire();

private:
    struct Zone;
    void on_reply(const std::string& zone, const DnsblReply& reply);

    const std::vector<DnsblSite>& sites_;
    std::function<void()> on_update_;
    std::map<std::string, DnsblSubscription> subscriptions_;  // zone -> query
    std::map<std::string, bool> answered_;                    // zone -> answered
    int score_ = 0;
    int pending_zones_ = 0;
    std::optional<uint32_t> min_ttl_;
    std::string top_zone_;
    int top_weight_ = 0;
};

}  // namespace smtpscreen
