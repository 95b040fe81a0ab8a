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

namespace {

// The zones in the order the sites first name them.
bool first_of_its_zone(const std::vector<DnsblSite>& sites, std::size_t i) {
    return std::none_of(sites.begin(), sites.begin() + static_cast<std::ptrdiff_t>(i),
                        [&](const DnsblSite& earlier) { return earlier.zone == sites[i].zone; });
}

const std::string& zone_at(const std::vector<DnsblSite>& sites, std::size_t index) {
    std::size_t seen = 0;
    for (std::size_t i = 0; i < sites.size(); ++i) {
        if (first_of_its_zone(sites, i) && seen++ == index) return sites[i].zone;
    }
    return sites.front().zone;  // not reached: index < zone_count()
}

// The answers so far, folded into a verdict.
struct Tally {
    void add(const std::string& zone, const DnsblReply& reply) {
        // A failed lookup counts as not listed and says nothing about how long to cache.
        if (reply.status != DnsblReply::Status::Failed) {
            min_ttl = has_ttl ? std::min(min_ttl, reply.ttl) : reply.ttl;
            has_ttl = true;
        } else {
            any_failed = true;
        }
        if (reply.status == DnsblReply::Status::Listed) listed[zone] = reply.addresses;
    }
    DnsblVerdict verdict(const std::vector<DnsblSite>& sites) const {
        DnsblVerdict v;
        v.any_failed = any_failed;
        if (has_ttl) v.min_ttl = min_ttl;
        if (!listed.empty()) {
            v.score = score_answers(sites, listed);
            v.top = top_listed_site_zone(sites, listed);
        }
        return v;
    }

    std::map<std::string, std::vector<uint32_t>> listed;  // listed zone -> A records
    uint32_t min_ttl = 0;                                  // when has_ttl
    bool has_ttl = false;
    bool any_failed = false;
};

}  // namespace

struct DnsblCheck::More {
    explicit More(std::size_t zones) : zone_count(zones), lookups(std::make_unique<DnsblSubscription[]>(zones - 1)) {}

    std::size_t zone_count;
    std::unique_ptr<DnsblSubscription[]> lookups;  // the zones after the first
    Tally tally;
};

DnsblCheck::DnsblCheck() = default;
DnsblCheck::~DnsblCheck() = default;

std::size_t DnsblCheck::zone_count(const std::vector<DnsblSite>& sites) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < sites.size(); ++i) n += first_of_its_zone(sites, i) ? 1 : 0;
    return n;
}

DnsblSubscription* DnsblCheck::lookup(std::size_t index) {
    if (index == 0) return &first_lookup_;
    return more_ && index < more_->zone_count ? &more_->lookups[index - 1] : nullptr;
}

const DnsblSubscription* DnsblCheck::lookup(std::size_t index) const {
    return const_cast<DnsblCheck*>(this)->lookup(index);
}

void DnsblCheck::start(DnsClient& resolver, const std::vector<DnsblSite>& sites, const Endpoint& client,
                       DnsblWaiter& waiter) {
    finish();
    const std::size_t zones = zone_count(sites);
    if (zones > 1) more_ = std::make_unique<More>(zones);
    // The resolver never calls back from inside lookup_dnsbl(), so every lookup is
    // pending before the first answer arrives.
    for (std::size_t i = 0; i < zones; ++i) *lookup(i) = resolver.lookup_dnsbl(client, zone_at(sites, i), waiter);
}

bool DnsblCheck::complete() const {
    for (std::size_t i = 0; const DnsblSubscription* l = lookup(i); ++i) {
        if (l->pending()) return false;
    }
    return true;
}

bool DnsblCheck::is_pending(const std::vector<DnsblSite>& sites, const std::string& z) const {
    for (std::size_t i = 0; const DnsblSubscription* l = lookup(i); ++i) {
        if (l->pending() && zone_at(sites, i) == z) return true;
    }
    return false;
}

bool DnsblCheck::listed_for_sure(const std::vector<DnsblSite>& sites, int score, int threshold) const {
    if (score < threshold) return false;
    return std::none_of(sites.begin(), sites.end(),
                        [&](const DnsblSite& site) { return site.weight < 0 && is_pending(sites, site.zone); });
}

DnsblCheck::Answer DnsblCheck::answer(const std::vector<DnsblSite>& sites, DnsblSubscription& which,
                                      const DnsblReply& reply) {
    std::size_t index = 0;
    const DnsblSubscription* l = nullptr;
    while ((l = lookup(index)) && l != &which) ++index;
    if (!l || sites.empty()) return {};
    const std::string& zone = zone_at(sites, index);
    Tally lone;  // one zone: its answer is the whole verdict, nothing is kept
    Tally& tally = more_ ? more_->tally : lone;
    tally.add(zone, reply);
    return {&zone, tally.verdict(sites)};
}

DnsblVerdict DnsblCheck::expire(const std::vector<DnsblSite>& sites,
                                const std::function<void(const std::string& zone)>& unanswered) {
    Tally lone;
    Tally& tally = more_ ? more_->tally : lone;
    for (std::size_t i = 0; const DnsblSubscription* l = lookup(i); ++i) {
        if (!l->pending()) continue;
        tally.any_failed = true;
        unanswered(zone_at(sites, i));
    }
    DnsblVerdict verdict = tally.verdict(sites);
    finish();
    return verdict;
}

void DnsblCheck::finish() {
    // Cancelling the subscriptions guarantees no late answer reaches the waiter.
    first_lookup_.cancel();
    more_.reset();
}

}  // namespace smtpscreen
