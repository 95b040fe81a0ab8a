#include "dnsbl/site.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "core/text.h"

namespace smtpscreen {

namespace {

constexpr std::string_view kSpace = " \t\r\n";

// Splits on sep, but not inside [...], so "[2;4]" stays one piece of a ';'-list.
std::vector<std::string_view> split_outside_brackets(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    int depth = 0;
    std::size_t start = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '[') ++depth;
        else if (s[i] == ']') --depth;
        else if (s[i] == sep && depth == 0) {
            parts.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    }
    parts.push_back(s.substr(start));
    return parts;
}

// Digits only: ip_match_parse() in Postfix takes no signs, spaces or hex either.
std::optional<uint8_t> parse_byte(std::string_view s) {
    if (s.empty() || s.size() > 3) return std::nullopt;
    unsigned value = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 255) return std::nullopt;
    return static_cast<uint8_t>(value);
}

// One item of a bracket list: "7" or "2..11". Returns an error sentence or "".
std::string add_item(std::string_view item, OctetSet& set) {
    const auto bounds = split(item, "..");
    if (bounds.size() > 2) return fmt::format("\"{}\" is not a number or a lo..hi range", item);
    const auto lo = parse_byte(bounds.front());
    const auto hi = parse_byte(bounds.back());
    if (!lo || !hi) return fmt::format("\"{}\" is not a number 0..255 or a lo..hi range of them", item);
    if (*lo > *hi) return fmt::format("range \"{}\" runs backwards (write the lower bound first)", item);
    for (unsigned v = *lo; v <= *hi; ++v) set.allowed[v] = true;
    return {};
}

std::string parse_octet(std::string_view text, OctetSet& set) {
    if (text.empty()) return "an octet is empty";
    if (text.front() != '[') {
        const auto v = parse_byte(text);
        if (!v) return fmt::format("octet \"{}\" is not a number 0..255 (or use [lo..hi] or [a;b])", text);
        set.allowed[*v] = true;
        return {};
    }
    if (text.back() != ']' || text.size() < 2) return fmt::format("octet \"{}\" has no closing ']'", text);
    const auto inner = text.substr(1, text.size() - 2);
    if (inner.find_first_of("[]") != std::string_view::npos)
        return fmt::format("octet \"{}\" has nested brackets", text);
    if (inner.empty()) return fmt::format("octet \"{}\" is an empty list", text);
    for (auto item : split(inner, ";")) {
        if (item.empty()) return fmt::format("octet \"{}\" has an empty list item", text);
        if (auto err = add_item(item, set); !err.empty()) return fmt::format("octet \"{}\": {}", text, err);
    }
    return {};
}

std::string parse_pattern(std::string_view text, AddressPattern& pattern) {
    if (text.empty()) return "the filter has an empty pattern";
    const auto octets = split_outside_brackets(text, '.');
    if (octets.size() != 4) return fmt::format("filter \"{}\" does not have four octets (write d.d.d.d)", text);
    for (std::size_t i = 0; i < 4; ++i) {
        if (auto err = parse_octet(octets[i], pattern.octets[i]); !err.empty())
            return fmt::format("filter \"{}\": {}", text, err);
    }
    return {};
}

std::string parse_filter(std::string_view text, std::vector<AddressPattern>& filter) {
    if (text.empty()) return "'=' is followed by no filter (write e.g. =127.0.0.2, or leave out '=')";
    int depth = 0;
    for (char c : text) {
        depth += (c == '[') - (c == ']');
        if (depth < 0 || depth > 1) return fmt::format("filter \"{}\" has unbalanced brackets", text);
    }
    if (depth != 0) return fmt::format("filter \"{}\" has unbalanced brackets", text);
    for (auto piece : split_outside_brackets(text, ';')) {
        AddressPattern pattern;
        if (auto err = parse_pattern(piece, pattern); !err.empty()) return err;
        filter.push_back(pattern);
    }
    return {};
}

std::string parse_weight(std::string_view text, int& weight) {
    auto digits = text;
    if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
    const char* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, weight);
    if (digits.empty() || ec != std::errc{} || ptr != end)
        return fmt::format("weight \"{}\" is not an integer (write e.g. *3, or *-2 for an allowlist)", text);
    // Bounded so that the sum over any list of sites stays far from overflowing an int.
    if (weight > kMaxDnsblWeight || weight < -kMaxDnsblWeight) {
        return fmt::format("weight \"{}\" is out of range (use -{} to {})", text, kMaxDnsblWeight, kMaxDnsblWeight);
    }
    return {};
}

bool valid_label_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

std::string parse_zone(std::string_view text, std::string& zone) {
    if (text.empty()) return "the DNS zone is missing (write e.g. zen.spamhaus.org)";
    zone = ascii_lower(text);
    if (zone.back() == '.') zone.pop_back();  // a fully qualified "zone." is the same zone
    if (zone.empty() || zone.size() > 253) return fmt::format("zone \"{}\" is not a valid domain name", text);
    for (auto label : split(zone, ".")) {
        if (label.empty() || label.size() > 63) return fmt::format("zone \"{}\" has an empty or over-long label", text);
        for (char c : label) {
            if (!valid_label_char(c))
                return fmt::format("zone \"{}\" contains '{}', which a domain name cannot", text, c);
        }
    }
    return {};
}

std::string parse_site(std::string_view text, DnsblSite& site) {
    auto rest = text;
    if (const auto star = rest.find('*'); star != std::string_view::npos) {
        if (auto err = parse_weight(rest.substr(star + 1), site.weight); !err.empty()) return err;
        rest = rest.substr(0, star);
    }
    if (const auto eq = rest.find('='); eq != std::string_view::npos) {
        if (auto err = parse_filter(rest.substr(eq + 1), site.filter); !err.empty()) return err;
        rest = rest.substr(0, eq);
    }
    return parse_zone(rest, site.zone);
}

}  // namespace

bool AddressPattern::matches(uint32_t ipv4_host_order) const {
    for (int i = 0; i < 4; ++i) {
        const auto byte = static_cast<uint8_t>(ipv4_host_order >> (24 - 8 * i));
        if (!octets[static_cast<std::size_t>(i)].matches(byte)) return false;
    }
    return true;
}

bool DnsblSite::matches(uint32_t ipv4_host_order) const {
    if (filter.empty()) return true;  // postscreen: no filter uses any non-error reply
    for (const auto& pattern : filter) {
        if (pattern.matches(ipv4_host_order)) return true;
    }
    return false;
}

std::optional<DnsblSite> parse_dnsbl_site(std::string_view text, std::string* error) {
    text = trim(text, kSpace);
    DnsblSite site;
    site.text = std::string(text);
    std::string err = text.empty() ? "is empty (write zone[=filter][*weight])" : parse_site(text, site);
    if (!err.empty()) {
        if (error) *error = fmt::format("DNSBL site \"{}\": {}", text, err);
        return std::nullopt;
    }
    return site;
}

std::vector<DnsblSite> parse_dnsbl_sites(std::string_view text, std::vector<std::string>* errors) {
    std::vector<DnsblSite> sites;
    std::size_t pos = 0;
    // Comma or whitespace separate sites, as in postscreen_dnsbl_sites.
    constexpr std::string_view kSeparators = ", \t\r\n";
    while (pos < text.size()) {
        const auto start = text.find_first_not_of(kSeparators, pos);
        if (start == std::string_view::npos) break;
        const auto end = std::min(text.find_first_of(kSeparators, start), text.size());
        std::string error;
        if (auto site = parse_dnsbl_site(text.substr(start, end - start), &error)) {
            sites.push_back(std::move(*site));
        } else if (errors) {
            errors->push_back(std::move(error));
        }
        pos = end;
    }
    return sites;
}

}  // namespace smtpscreen
