#include "dnsbl/check.h"

#include <algorithm>

namespace smtpscreen {

namespace {

bool site_matches(const DnsblSite& site, const std::map<std::string, std::vector<uint32_t>>& answers) {
    auto it = answers.find(site.zone);
    if (it == answers.end()) return false;
    return std::any_of(it->second.begin(), it->second.end(), [&](uint32_t a) { return site.matches(a); });
}

}  // namespace

int score_answers(const std::vector<DnsblSite>& sites, const std::map<std::string, std::vector<uint32_t>>& answers) {
    int score = 0;
    for (const auto& site : sites) {
        if (site_matches(site, answers)) score += site.weight;
    }
    return score;
}

std::string_view top_listed_zone(const std::vector<DnsblSite>& sites,
                            const std::map<std::string, std::vector<uint32_t>>& answers) {
    const std::string* zone = top_listed_site_zone(sites, answers);
    return zone ? std::string_view(*zone) : std::string_view();
}

const std::string* top_listed_site_zone(const std::vector<DnsblSite>& sites,
                                        const std::map<std::string, std::vector<uint32_t>>& answers) {
    const DnsblSite* top = nullptr;
    for (const auto& site : sites) {
        if (site.weight > 0 && (!top || site.weight > top->weight) && site_matches(site, answers)) top = &site;
    }
    return top ? &top->zone : nullptr;
}

DnsblCheck::DnsblCheck(DnsClient& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client,
                       Listener& listener)
    : sites_(sites), listener_(listener) {
    std::vector<const std::string*> zones;
    for (const auto& site : sites_) {
        if (std::none_of(zones.begin(), zones.end(), [&](const std::string* z) { return *z == site.zone; })) {
            zones.push_back(&site.zone);
        }
    }
    zone_count_ = static_cast<uint32_t>(zones.size());
    if (zones.size() > 1) more_lookups_ = std::make_unique<DnsblSubscription[]>(zones.size() - 1);
    // The resolver never calls back from inside lookup_dnsbl(), so every lookup is
    // pending before the first answer arrives.
    for (std::size_t i = 0; i < zones.size(); ++i) lookup(i) = resolver.lookup_dnsbl(client, *zones[i], *this);
}

DnsblVerdict DnsblCheck::verdict() const {
    DnsblVerdict v;
    v.score = score_;
    v.any_failed = any_failed_;
    v.min_ttl = min_ttl();
    v.top = top_;
    return v;
}

const std::string& DnsblCheck::zone(std::size_t index) const {
    std::size_t seen = 0;
    for (std::size_t i = 0; i < sites_.size(); ++i) {
        const auto& z = sites_[i].zone;
        const bool first = std::none_of(sites_.begin(), sites_.begin() + static_cast<std::ptrdiff_t>(i),
                                        [&](const DnsblSite& earlier) { return earlier.zone == z; });
        if (first && seen++ == index) return z;
    }
    return sites_.front().zone;  // not reached: index < zone_count()
}

bool DnsblCheck::complete() const {
    for (std::size_t i = 0; i < zone_count(); ++i) {
        if (lookup(i).pending()) return false;
    }
    return true;
}

bool DnsblCheck::is_pending(const std::string& z) const {
    for (std::size_t i = 0; i < zone_count(); ++i) {
        if (lookup(i).pending() && zone(i) == z) return true;
    }
    return false;
}

bool DnsblCheck::listed_for_sure(int threshold) const {
    if (score_ < threshold) return false;
    return std::none_of(sites_.begin(), sites_.end(),
                        [&](const DnsblSite& site) { return site.weight < 0 && is_pending(site.zone); });
}

void DnsblCheck::expire() {
    for (std::size_t i = 0; i < zone_count(); ++i) {
        if (!lookup(i).pending()) continue;
        any_failed_ = true;
        listener_.dnsbl_answered(zone(i), DnsblReply::Status::Failed);
    }
    // Cancelling the subscriptions guarantees no late answer reaches dnsbl_reply.
    for (std::size_t i = 0; i < zone_count(); ++i) lookup(i).cancel();
}

void DnsblCheck::dnsbl_reply(DnsblSubscription& which, const DnsblReply& reply) {
    std::size_t index = 0;
    while (index < zone_count() && &lookup(index) != &which) ++index;
    if (index == zone_count()) return;
    const std::string& answered = zone(index);
    // A failed lookup counts as not listed and says nothing about how long to cache.
    if (reply.status != DnsblReply::Status::Failed) {
        min_ttl_ = has_ttl_ ? std::min(min_ttl_, reply.ttl) : reply.ttl;
        has_ttl_ = true;
    } else {
        any_failed_ = true;
    }
    if (reply.status == DnsblReply::Status::Listed) {
        if (!listed_) listed_ = std::make_unique<std::map<std::string, std::vector<uint32_t>>>();
        (*listed_)[answered] = reply.addresses;
        score_ = score_answers(sites_, *listed_);
        top_ = top_listed_site_zone(sites_, *listed_);
    }
    listener_.dnsbl_answered(answered, reply.status);
    // The listener may destroy this check: touch no member after the call.
    listener_.dnsbl_updated();
}

}  // namespace smtpscreen
