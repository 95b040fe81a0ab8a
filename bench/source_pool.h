#pragma once
// The source addresses one role's sessions bind to. Spreading sessions over many
// 127.x.y.z addresses spreads the (source, port, target) 4-tuple space, so a long run
// does not exhaust the ~28,000 ephemeral ports that one source address has per target,
// and each screened client looks like a different host to smtpscreen's per-client
// limit and cache.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smtpload {

class SourcePool {
public:
    // Comma list of IPv4 addresses and CIDRs inside 127.0.0.0/8, e.g.
    // "127.0.0.2,127.0.0.10" or "127.1.0.0/16". A CIDR of /30 or wider leaves out its
    // first and last address (network and broadcast by convention).
    static std::optional<SourcePool> parse(std::string_view spec, std::string& error);

    // Addresses are handed out round robin. Thread `first` of `stride` threads starts at
    // its own offset and steps by `stride`, so threads never share an address.
    void spread(uint64_t first, uint64_t stride);
    uint32_t next();  // host byte order
    uint64_t size() const { return total_; }

private:
    struct Range {
        uint32_t first;
        uint64_t count;
    };
    uint32_t at(uint64_t index) const;

    std::vector<Range> ranges_;
    uint64_t total_ = 0;
    uint64_t cursor_ = 0;
    uint64_t stride_ = 1;
};

// "127.0.0.1" -> host-order address, nullopt when not a dotted quad.
std::optional<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t host_order);
inline bool is_loopback(uint32_t host_order) { return (host_order >> 24) == 127; }

}  // namespace smtpload
