// Fuzz target: dnsbl/site.h. The input is a dnsbl.sites value (postscreen syntax,
// zone[=filter][*weight], comma or space separated). Every site that parses must be
// usable (matches() on any answer), and its `text`, which --print-config writes back,
// must parse again to the same site, alone and as a one-element list. The parsed list is
// then scored (dnsbl/check.h) against answers for its zones, as a verdict would be.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dnsbl/check.h"
#include "dnsbl/site.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;

namespace {

constexpr std::string_view kSeparators = ", \t\r\n";

// Answers worth asking about: the usual DNSBL return codes, the edges of 127/8, and
// the extremes of each octet.
constexpr uint32_t kAnswers[] = {
    0x7f000001, 0x7f000002, 0x7f000003, 0x7f000004, 0x7f00000a, 0x7f00000b, 0x7f0000ff, 0x7f000100,
    0x7fffffff, 0x7f0a0001, 0x7f0f0002, 0x00000000, 0xffffffff, 0x0a000002, 0x80000000, 0x7f7f7f7f,
};

bool same_site(const DnsblSite& a, const DnsblSite& b) {
    if (a.zone != b.zone || a.weight != b.weight || a.text != b.text || a.filter.size() != b.filter.size()) {
        return false;
    }
    for (size_t p = 0; p < a.filter.size(); ++p) {
        for (size_t o = 0; o < 4; ++o) {
            if (a.filter[p].octets[o].allowed != b.filter[p].octets[o].allowed) return false;
        }
    }
    return true;
}

std::string describe(const DnsblSite& s) {
    return "zone " + escaped(s.zone) + " weight " + std::to_string(s.weight) + " patterns " +
           std::to_string(s.filter.size()) + " text " + escaped(s.text);
}

void check_site(const DnsblSite& site, fuzz::InputRandom& rnd, std::string_view in) {
    // Built only when a check fails: it is most of the cost otherwise.
    const auto where = [&] { return ": " + describe(site) + " from " + escaped(in); };

    // The zone is what the resolver will query: a lower-case domain name, no final dot.
    FUZZ_CHECK(!site.zone.empty() && site.zone.size() <= 253, "zone length" + where());
    FUZZ_CHECK(site.zone.back() != '.', "zone with a trailing dot" + where());
    for (char c : site.zone) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "zone not lower case" + where());
    FUZZ_CHECK(!site.text.empty() && site.text.find_first_of(kSeparators) == std::string::npos,
               "site text with a separator" + where());

    // matches() is "no filter, or any pattern matches", for any answer.
    auto expected = [&](uint32_t a) {
        if (site.filter.empty()) return true;
        for (const auto& p : site.filter) {
            if (p.matches(a)) return true;
        }
        return false;
    };
    uint32_t answers[sizeof kAnswers / sizeof kAnswers[0] + 4];
    size_t n = 0;
    for (uint32_t a : kAnswers) answers[n++] = a;
    for (int i = 0; i < 4; ++i) answers[n++] = static_cast<uint32_t>(rnd.next());

    // The text parses back to the same site, alone and as a list of one.
    std::string error;
    const auto again = parse_dnsbl_site(site.text, &error);
    FUZZ_CHECK(again.has_value(), "its text does not parse again: " + error + where());
    FUZZ_CHECK(same_site(site, *again), "its text parses to " + describe(*again) + where());
    std::vector<std::string> errors;
    const auto list = parse_dnsbl_sites(site.text, &errors);
    FUZZ_CHECK(errors.empty() && list.size() == 1 && same_site(site, list[0]),
               "its text as dnsbl.sites gives " + std::to_string(list.size()) + " sites and " +
                   std::to_string(errors.size()) + " errors" + where());

    for (size_t i = 0; i < n; ++i) {
        const bool m = site.matches(answers[i]);
        FUZZ_CHECK(m == expected(answers[i]), "matches() disagrees with its patterns" + where());
        FUZZ_CHECK(m == again->matches(answers[i]), "the re-parsed site matches differently" + where());
    }
}

// Every zone answers with a record or two; the score must be the plain sum of the
// weights of the sites that match (each once), and the zone named in the reply a
// matching site of the highest positive weight.
void check_scoring(const std::vector<DnsblSite>& sites, fuzz::InputRandom& rnd, std::string_view in) {
    std::map<std::string, std::vector<uint32_t>> answers;
    for (const auto& site : sites) {
        auto& records = answers[site.zone];
        if (records.empty()) records.push_back(kAnswers[rnd.below(sizeof kAnswers / sizeof kAnswers[0])]);
        if (rnd.below(2) == 0) records.push_back(static_cast<uint32_t>(rnd.next()));
    }
    int64_t expected = 0;
    int top_weight = 0;
    for (const auto& site : sites) {
        bool listed = false;
        for (uint32_t a : answers[site.zone]) listed = listed || site.matches(a);
        if (!listed) continue;
        expected += site.weight;
        if (site.weight > top_weight) top_weight = site.weight;
    }
    const int score = score_answers(sites, answers);
    FUZZ_CHECK(score == expected, "score " + std::to_string(score) + ", the weights add up to " +
                                      std::to_string(expected) + ": " + escaped(in));
    const std::string top(top_listed_zone(sites, answers));
    if (top_weight == 0) {
        FUZZ_CHECK(top.empty(), "zone " + escaped(top) + " named with no positive listing: " + escaped(in));
    } else {
        bool found = false;
        for (const auto& site : sites) found = found || (site.zone == top && site.weight == top_weight);
        FUZZ_CHECK(found, "zone " + escaped(top) + " named, not one of weight " + std::to_string(top_weight) + ": " +
                              escaped(in));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    fuzz::InputRandom rnd(in);

    std::vector<std::string> errors;
    const auto sites = parse_dnsbl_sites(in, &errors);
    // Every separated item is either a site or one error.
    size_t items = 0;
    for (size_t pos = in.find_first_not_of(kSeparators); pos != std::string_view::npos;
         pos = in.find_first_not_of(kSeparators, pos)) {
        ++items;
        pos = in.find_first_of(kSeparators, pos);
        if (pos == std::string_view::npos) break;
    }
    FUZZ_CHECK(sites.size() + errors.size() == items, std::to_string(items) + " items gave " +
                                                          std::to_string(sites.size()) + " sites and " +
                                                          std::to_string(errors.size()) + " errors: " + escaped(in));
    for (const auto& e : errors) FUZZ_CHECK(!e.empty(), "empty error message for " + escaped(in));
    for (const auto& site : sites) check_site(site, rnd, in);
    check_scoring(sites, rnd, in);

    // The whole input as one site (what a caller holding a single entry would do).
    std::string error;
    if (const auto site = parse_dnsbl_site(in, &error)) {
        check_site(*site, rnd, in);
    } else {
        FUZZ_CHECK(!error.empty(), "parse_dnsbl_site failed without a reason: " + escaped(in));
    }
    return 0;
}
