#pragma once
// postscreen_dnsbl_sites syntax: zone[=filter][*weight], e.g.
//   zen.spamhaus.org=127.0.0.[2..11]*3, list.dnswl.org=127.0.[0..255].[1..3]*-2
// A filter is one or more A-record patterns separated by ';'; each octet is a number,
// a [lo..hi] range or a [a;b;c] list. No filter means any 127.x answer lists.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen {

// A site's weight is at most this far from 0 (postscreen has no bound; sums of real
// lists stay in single digits).
constexpr int kMaxDnsblWeight = 100000;

struct OctetSet {
    std::array<bool, 256> allowed{};
    bool matches(uint8_t v) const { return allowed[v]; }
    friend bool operator==(const OctetSet&, const OctetSet&) = default;
};

struct AddressPattern {
    std::array<OctetSet, 4> octets;
    bool matches(uint32_t ipv4_host_order) const;
    friend bool operator==(const AddressPattern&, const AddressPattern&) = default;
};

struct DnsblSite {
    std::string zone;                     // lower case, no trailing dot
    std::vector<AddressPattern> filter;   // empty: any answer matches
    int weight = 1;
    std::string text;                     // as written, for --print-config and logs

    bool matches(uint32_t ipv4_host_order) const;
    friend bool operator==(const DnsblSite&, const DnsblSite&) = default;
};

// Parses one site; on error returns nullopt and sets *error to a sentence naming the problem.
std::optional<DnsblSite> parse_dnsbl_site(std::string_view text, std::string* error);
// Parses the comma-separated list of dnsbl.sites; every error is appended to *errors.
std::vector<DnsblSite> parse_dnsbl_sites(std::string_view text, std::vector<std::string>* errors);

}  // namespace smtpscreen
