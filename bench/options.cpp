#include "bench/options.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstdio>
#include <string_view>

namespace smtpload {
namespace {

constexpr const char* kUsage = R"(usage: smtpload [options]

Plays SMTP clients against a loopback SMTP front end and reports sessions/s, latency,
final reply codes and errors. Stops after --sessions sessions or --duration, whichever
comes first.

  --target IP:PORT        server to load (loopback only)           [127.0.0.1:2525]
  --concurrency N         sessions in flight at once                [50]
  --sessions N            total sessions to start                   [10000]
  --duration D            stop starting sessions after D            [30s]
  --mix ROLE=W,...        clean, pregreet, dnsbl, idle, slow,       [clean=100]
                            starttls, tls
  --message-size S        body octets for clean/dnsbl/slow (k, m)   [1k]
  --timeout D             per session, connect to end               [10s]
  --hold D                how long an idle session holds      [until the run ends]
  --slow-delay D          pause between the bytes a slow client sends [10ms]
  --threads N             event loops, each on its own thread       [1]
  --rate N                start at most N sessions a second   [no limit]
                            (ramps up idle holders: a burst of thousands of
                            connects overflows the server's listen backlog)
  --json FILE             write the results as JSON ("-" for stdout)
  --quiet                 no progress line, no table
  --ROLE-sources LIST     source addresses for ROLE: IPs and CIDRs in 127.0.0.0/8
                            clean, slow: 127.1.0.0/16   pregreet: 127.3.0.0/16
                            dnsbl: 127.0.0.2,127.0.0.10 idle: 127.4.0.0/16
                            starttls, tls: 127.5.0.0/16
  --helo NAME, --from ADDR, --to ADDR   the envelope the talking roles send
  --tls-resume            starttls, tls: each thread offers the session (ticket)
                            of its first handshake on every later one
  --tls-ciphers LIST      OpenSSL cipher list, TLS 1.2 only
                            [ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256]
  --tls-groups LIST       key exchange groups offered                [X25519:P-256]

Durations: 500ms, 30s, 2m, 1h. A run ends when every session has ended; sessions still
open at --duration plus --timeout are aborted and counted as timeouts.
)";

constexpr std::array<const char*, kRoleCount> kDefaultSources = {
    "127.1.0.0/16",            // clean
    "127.3.0.0/16",            // pregreet
    "127.0.0.2,127.0.0.10",    // dnsbl: listed in the integration tests' bl.test zone
    "127.4.0.0/16",            // idle
    "127.1.0.0/16",            // slow: a clean client, from clean addresses
    "127.5.0.0/16",            // starttls
    "127.5.0.0/16",            // tls
};

template <typename T>
std::optional<T> parse_number(std::string_view text) {
    T v{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return v;
}

bool usage_error(const std::string& what) {
    std::fprintf(stderr, "smtpload: %s\n(smtpload --help for the options)\n", what.c_str());
    return false;
}

bool parse_target(std::string_view text, Options& o) {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return usage_error("--target wants IP:PORT");
    auto ip = parse_ipv4(text.substr(0, colon));
    auto port = parse_number<int>(text.substr(colon + 1));
    if (!ip || !port || *port < 1 || *port > 65535) return usage_error("bad --target \"" + std::string(text) + "\"");
    // Sources are bound inside 127/8, which reaches loopback targets only.
    if (!is_loopback(*ip)) return usage_error("--target must be a loopback address (127.0.0.0/8)");
    o.target.sin_family = AF_INET;
    o.target.sin_port = htons(static_cast<uint16_t>(*port));
    o.target.sin_addr.s_addr = htonl(*ip);
    o.target_text = std::string(text);
    return true;
}

// Applies one "--name value" option; returns false (after printing why) on a bad one.
bool apply(std::string_view name, std::string_view value, Options& o) {
    auto positive = [&](auto& out, auto max) {
        using T = std::remove_reference_t<decltype(out)>;
        auto v = parse_number<T>(value);
        if (!v || *v < 1 || *v > max) {
            return usage_error("--" + std::string(name) + " wants a number from 1 to " + std::to_string(max));
        }
        out = *v;
        return true;
    };
    auto duration = [&](Millis& out) {
        auto d = parse_duration(value);
        if (!d) return usage_error("--" + std::string(name) + " wants a duration such as 30s or 500ms");
        out = *d;
        return true;
    };
    if (name == "target") return parse_target(value, o);
    if (name == "concurrency") return positive(o.concurrency, 1000000);
    if (name == "sessions") return positive(o.sessions, int64_t{1} << 40);
    if (name == "threads") return positive(o.threads, 64);
    if (name == "rate") {
        int r = 0;
        if (!positive(r, 10000000)) return false;
        o.rate = r;
        return true;
    }
    if (name == "duration") return duration(o.duration);
    if (name == "timeout") return duration(o.timeout);
    if (name == "slow-delay") return duration(o.slow_delay);
    if (name == "hold") {
        Millis h{};
        if (!duration(h)) return false;
        o.hold = h;
        return true;
    }
    if (name == "message-size") {
        auto s = parse_size(value);
        if (!s || *s > (size_t{1} << 30)) return usage_error("--message-size wants a size up to 1g, e.g. 1k or 10m");
        o.message_size = *s;
        return true;
    }
    if (name == "mix") {
        std::string error;
        auto mix = Mix::parse(value, error);
        if (!mix) return usage_error(error);
        o.mix = *mix;
        return true;
    }
    if (name == "tls-ciphers" || name == "tls-groups") {
        if (value.empty()) return usage_error("--" + std::string(name) + " wants a list");
        (name == "tls-ciphers" ? o.tls_ciphers : o.tls_groups) = std::string(value);
        return true;
    }
    if (name == "json") {
        o.json_path = std::string(value);
        return true;
    }
    if (name == "helo" || name == "from" || name == "to") {
        if (value.empty() || value.find_first_of("\r\n <>") != std::string_view::npos) {
            return usage_error("--" + std::string(name) + " must be one word without <, > or line breaks");
        }
        (name == "helo" ? o.helo : name == "from" ? o.mail_from : o.rcpt_to) = std::string(value);
        return true;
    }
    constexpr std::string_view kSuffix = "-sources";
    if (name.size() > kSuffix.size() && name.ends_with(kSuffix)) {
        auto role = role_from_name(name.substr(0, name.size() - kSuffix.size()));
        if (!role) return usage_error("unknown option --" + std::string(name));
        o.source_specs[index_of(*role)] = std::string(value);
        return true;
    }
    return usage_error("unknown option --" + std::string(name));
}

}  // namespace

std::optional<Millis> parse_duration(std::string_view text) {
    size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    auto n = parse_number<int64_t>(text.substr(0, digits));
    if (!n || *n > (int64_t{1} << 40)) return std::nullopt;
    std::string_view unit = text.substr(digits);
    if (unit == "ms") return Millis(*n);
    if (unit.empty() || unit == "s") return Millis(*n * 1000);
    if (unit == "m") return Millis(*n * 60'000);
    if (unit == "h") return Millis(*n * 3'600'000);
    return std::nullopt;
}

std::optional<size_t> parse_size(std::string_view text) {
    size_t mult = 1;
    if (!text.empty()) {
        char last = text.back();
        if (last == 'k' || last == 'K') mult = 1024;
        if (last == 'm' || last == 'M') mult = 1024 * 1024;
        if (last == 'g' || last == 'G') mult = 1024 * 1024 * 1024;
        if (mult != 1) text.remove_suffix(1);
    }
    auto n = parse_number<size_t>(text);
    if (!n || *n > (size_t{1} << 40) / mult) return std::nullopt;
    return *n * mult;
}

ParsedOptions parse_options(int argc, char** argv) {
    Options o;
    for (size_t i = 0; i < kRoleCount; ++i) o.source_specs[i] = kDefaultSources[i];
    parse_target(o.target_text, o);

    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(kUsage, stdout);
            return {std::nullopt, 0};
        }
        if (arg == "--quiet" || arg == "-q") {
            o.quiet = true;
            continue;
        }
        if (arg == "--tls-resume") {
            o.tls_resume = true;
            continue;
        }
        if (!arg.starts_with("--")) {
            usage_error("unexpected argument \"" + std::string(arg) + "\"");
            return {std::nullopt, 2};
        }
        std::string_view name = arg.substr(2);
        std::string_view value;
        if (size_t eq = name.find('='); eq != std::string_view::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            usage_error("--" + std::string(name) + " needs a value");
            return {std::nullopt, 2};
        }
        if (!apply(name, value, o)) return {std::nullopt, 2};
    }

    for (Role r : kAllRoles) {
        std::string error;
        auto pool = SourcePool::parse(o.source_specs[index_of(r)], error);
        if (!pool) {
            usage_error("--" + std::string(role_name(r)) + "-sources: " + error);
            return {std::nullopt, 2};
        }
        o.sources[index_of(r)] = std::move(*pool);
    }
    return {std::move(o), 0};
}

}  // namespace smtpload
