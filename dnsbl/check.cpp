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
    const DnsblSite* top = nullptr;
    for (const auto& site : sites) {
        if (site.weight > 0 && (!top || site.weight > top->weight) && site_matches(site, answers)) top = &site;
    }
    return top ? std::string_view(top->zone) : std::string_view();
}

DnsblCheck::DnsblCheck(DnsClient& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client,
                       Listener& listener)
    : sites_(sites), listener_(listener) {
    for (const auto& site : sites_) {
        if (is_pending(site.zone)) continue;
        // The resolver never calls back from inside lookup(), so pending_ is complete
        // before the first answer arrives.
        pending_.push_back({&site.zone, resolver.lookup_dnsbl(client, site.zone, [this, zone = &site.zone](const DnsblReply& r) {
                                on_reply(*zone, r);
                            })});
    }
}

bool DnsblCheck::is_pending(const std::string& zone) const {
    return std::any_of(pending_.begin(), pending_.end(), [&](const PendingZone& p) { return *p.zone == zone; });
}

bool DnsblCheck::listed_for_sure(int threshold) const {
    if (verdict_.score < threshold) return false;
    return std::none_of(sites_.begin(), sites_.end(),
                        [&](const DnsblSite& site) { return site.weight < 0 && is_pending(site.zone); });
}

void DnsblCheck::expire() {
    if (!pending_.empty()) verdict_.any_failed = true;
    for (const auto& pending : pending_) listener_.dnsbl_answered(*pending.zone, DnsblReply::Status::Failed);
    // Destroying the subscriptions guarantees no late answer reaches on_reply.
    pending_.clear();
}

void DnsblCheck::on_reply(const std::string& zone, const DnsblReply& reply) {
    auto it = std::find_if(pending_.begin(), pending_.end(), [&](const PendingZone& p) { return *p.zone == zone; });
    if (it == pending_.end()) return;
    // A failed lookup counts as not listed and says nothing about how long to cache.
    if (reply.status != DnsblReply::Status::Failed) verdict_.min_ttl = std::min(verdict_.min_ttl.value_or(reply.ttl), reply.ttl);
    else verdict_.any_failed = true;
    if (reply.status == DnsblReply::Status::Listed) {
        if (!listed_) listed_ = std::make_unique<std::map<std::string, std::vector<uint32_t>>>();
        (*listed_)[zone] = reply.addresses;
        verdict_.score = score_answers(sites_, *listed_);
        verdict_.top_zone = top_listed_zone(sites_, *listed_);
    }
    listener_.dnsbl_answered(zone, reply.status);
    pending_.erase(it);
    // The listener may destroy this check: touch no member after the call.
    listener_.dnsbl_updated();
}

}  // namespace smtpscreen
