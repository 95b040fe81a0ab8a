#include "bench/source_pool.h"

#include <arpa/inet.h>

#include <charconv>

namespace smtpload {

std::optional<uint32_t> parse_ipv4(std::string_view text) {
    in_addr a{};
    std::string s(text);
    if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
    return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t host_order) {
    return std::to_string(host_order >> 24) + "." + std::to_string((host_order >> 16) & 255) + "." +
           std::to_string((host_order >> 8) & 255) + "." + std::to_string(host_order & 255);
}

std::optional<SourcePool> SourcePool::parse(std::string_view spec, std::string& error) {
    SourcePool pool;
    size_t pos = 0;
    while (pos <= spec.size()) {
        size_t comma = spec.find(',', pos);
        std::string_view item = spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        pos = comma == std::string_view::npos ? spec.size() + 1 : comma + 1;
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (item.empty()) continue;

        size_t slash = item.find('/');
        auto ip = parse_ipv4(item.substr(0, slash));
        int prefix = 32;
        if (slash != std::string_view::npos) {
            std::string_view p = item.substr(slash + 1);
            auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
            if (ec != std::errc() || end != p.data() + p.size() || prefix < 8 || prefix > 32) ip.reset();
        }
        if (!ip) {
            error = "bad source address or CIDR \"" + std::string(item) + "\" (e.g. 127.0.0.2 or 127.1.0.0/16)";
            return std::nullopt;
        }
        // Binding to a 127/8 source only reaches a loopback target, and the bench runs on
        // loopback alone: refusing anything else keeps a typo from binding a real address.
        if (!is_loopback(*ip)) {
            error = "source \"" + std::string(item) + "\" is not inside 127.0.0.0/8";
            return std::nullopt;
        }
        uint64_t count = uint64_t{1} << (32 - prefix);
        uint32_t first = *ip & ~static_cast<uint32_t>(count - 1);
        if (prefix <= 30) {
            first += 1;
            count -= 2;
        }
        pool.ranges_.push_back({first, count});
        pool.total_ += count;
    }
    if (pool.total_ == 0) {
        error = "empty source address list";
        return std::nullopt;
    }
    return pool;
}

void SourcePool::spread(uint64_t first, uint64_t stride) {
    stride_ = stride == 0 ? 1 : stride;
    cursor_ = first % total_;
}

uint32_t SourcePool::at(uint64_t index) const {
    for (const Range& r : ranges_) {
        if (index < r.count) return r.first + static_cast<uint32_t>(index);
        index -= r.count;
    }
    return ranges_.front().first;  // unreachable: index < total_
}

uint32_t SourcePool::next() {
    uint32_t a = at(cursor_);
    cursor_ = (cursor_ + stride_) % total_;
    return a;
}

}  // namespace smtpload
