#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "core/config.h"

namespace smtpscreen {

namespace {

// Wrap only what would not fit in a readable line, since tools that read the output
// line by line handle a continuation line less well than a long one.
constexpr size_t kReadableLine = 190;

std::string_view on_off(bool b) {
    return b ? "on" : "off";
}

std::string_view action_name(Action a) {
    switch (a) {
    case Action::Ignore: return "ignore";
    case Action::Drop: return "drop";
    case Action::Enforce: break;
    }
    return "enforce";
}

std::string_view proxy_protocol_name(ProxyProtocol p) {
    switch (p) {
    case ProxyProtocol::V1: return "v1";
    case ProxyProtocol::V2: return "v2";
    case ProxyProtocol::Auto: return "auto";
    case ProxyProtocol::Off: break;
    }
    return "off";
}

std::string_view handoff_name(Handoff h) {
    switch (h) {
    case Handoff::ProxyV1: return "proxy-v1";
    case Handoff::Xclient: return "xclient";
    case Handoff::None: return "none";
    case Handoff::ProxyV2: break;
    }
    return "proxy-v2";
}

std::string_view cache_backend_name(CacheBackend b) {
    switch (b) {
    case CacheBackend::Redis: return "redis";
    case CacheBackend::Memory: return "memory";
    case CacheBackend::Lmdb: break;
    }
    return "lmdb";
}

template <typename T, typename F>
std::string join(const std::vector<T>& items, F&& text) {
    std::string out;
    for (const auto& item : items) {
        if (!out.empty()) out += ", ";
        out += text(item);
    }
    return out;
}

// How one key's lines look: the readable form first; the compact form ("key=value",
// continuation lines indented by one space, lines as long as load_config reads) fits
// every value the readable one cannot and that load_config could have read.
struct LineStyle {
    std::string_view equals;  // between the key and the value
    std::string_view indent;  // of continuation lines
    size_t max_line;
};
constexpr LineStyle kReadable{" = ", "    ", kReadableLine};
constexpr LineStyle kCompact{"=", " ", kIniMaxLine};

bool is_space(char ch) {
    return std::isspace(static_cast<unsigned char>(ch)) != 0;  // as the INI reader trims
}

// Lines for one value in one style. A value is cut only at a single space between two
// other characters (load_config joins continuation lines with one space); the cuts are
// chosen greedily, longest line first, among those after which the rest still fits.
class ValueLines {
public:
    ValueLines(std::string_view section, std::string_view value, const LineStyle& style)
        : section_(section), value_(value), style_(style) {}

    std::optional<std::string> lay_out(std::string_view key) {
        std::string head = fmt::format("{}{}", key, style_.equals);
        if (value_.empty()) return trimmed(head) + "\n";
        if (head.size() + value_.size() <= style_.max_line && ini_piece_reads_back(value_)) {
            return head + std::string(value_) + "\n";
        }
        find_line_ends();
        // The first line holds the longest prefix that fits, or nothing when even the
        // first word does not fit after the key (the value then starts on the next line).
        for (size_t end = previous_cut(value_.size()); end > 0; end = previous_cut(end)) {
            if (head.size() + end <= style_.max_line && ini_piece_reads_back(value_.substr(0, end)) &&
                line_end_[end + 1] != kNone) {
                return head + std::string(value_.substr(0, end)) + "\n" + continuation_lines(end + 1);
            }
        }
        if (line_end_[0] == kNone) return std::nullopt;
        return trimmed(head) + "\n" + continuation_lines(0);
    }

private:
    static constexpr size_t kNone = std::string_view::npos;

    static std::string trimmed(std::string_view head) {
        while (!head.empty() && head.back() == ' ') head.remove_suffix(1);
        return std::string(head);
    }

    // A cut is a single space with a character other than white space on both sides.
    bool is_cut(size_t i) const {
        return i > 0 && i + 1 < value_.size() && value_[i] == ' ' && !is_space(value_[i - 1]) &&
               !is_space(value_[i + 1]);
    }
    // The cut before `end` (0 if none).
    size_t previous_cut(size_t end) const {
        while (end > 0 && !is_cut(--end)) {
        }
        return end;
    }

    bool fits_continuation(size_t start, size_t end) const {
        auto piece = value_.substr(start, end - start);
        return style_.indent.size() + piece.size() <= style_.max_line && ini_piece_reads_back(piece) &&
               ini_line_continues(section_, piece);
    }

    // line_end_[start]: where the longest continuation line from `start` ends such that
    // the rest fits too (kNone: nothing fits). From the end backwards, so that every
    // line's rest is known when the line is weighed.
    void find_line_ends() {
        line_end_.assign(value_.size() + 1, kNone);
        for (size_t start = value_.size(); start-- > 0;) {
            if (start != 0 && !is_cut(start - 1)) continue;
            size_t room = style_.max_line - std::min(style_.max_line, style_.indent.size());
            size_t end = std::min(value_.size(), start + room);
            if (end < value_.size() && !is_cut(end)) end = previous_cut(end);
            for (; end > start; end = previous_cut(end)) {
                bool rest = end == value_.size() || line_end_[end + 1] != kNone;
                if (rest && fits_continuation(start, end)) {
                    line_end_[start] = end;
                    break;
                }
            }
        }
    }

    std::string continuation_lines(size_t start) const {
        std::string out;
        while (start < value_.size()) {
            size_t end = line_end_[start];
            out += style_.indent;
            out.append(value_.substr(start, end - start));
            out += "\n";
            start = end + 1;
        }
        return out;
    }

    std::string_view section_;
    std::string_view value_;
    const LineStyle& style_;
    std::vector<size_t> line_end_;
};

}  // namespace

std::vector<PrintedValue> printed_values(const Config& c) {
    std::vector<PrintedValue> out;
    std::string_view section;
    auto put = [&](std::string_view key, std::string_view value) { out.push_back({section, key, std::string(value)}); };
    auto ms = [](Millis d) { return format_duration(d); };
    auto endpoint = [](const Endpoint& e) { return e.ip_port(); };

    section = "listen";
    put("address", join(c.listen_addresses, endpoint));
    put("proxy_protocol", proxy_protocol_name(c.proxy_protocol));
    put("proxy_from", join(c.proxy_from, [](const Cidr& n) { return n.to_string(); }));
    put("proxy_timeout", ms(c.proxy_timeout));

    section = "backend";
    put("address", c.backend_address.ip_port());
    put("handoff", handoff_name(c.handoff));
    put("source_address", c.backend_source_address ? c.backend_source_address->ip() : "");
    put("connect_timeout", ms(c.backend_connect_timeout));
    put("idle_timeout", ms(c.backend_idle_timeout));
    put("i_know_this_is_an_open_relay", c.i_know_this_is_an_open_relay ? "yes" : "no");
    put("tls", on_off(c.backend_tls));
    put("tls_ca", c.backend_tls_ca);

    section = "greet";
    put("banner", c.banner_template);
    put("wait", ms(c.greet_wait));
    put("action", action_name(c.greet_action));

    section = "dnsbl";
    put("sites", join(c.dnsbl_sites, [](const DnsblSite& s) { return s.text; }));
    put("threshold", std::to_string(c.dnsbl_threshold));
    put("allowlist_threshold", std::to_string(c.dnsbl_allowlist_threshold));
    put("action", action_name(c.dnsbl_action));
    put("timeout", ms(c.dnsbl_timeout));
    put("servers", join(c.dnsbl_servers, endpoint));
    put("reply_map", c.dnsbl_reply_map_file);

    section = "deep";
    put("pipelining", on_off(c.deep_pipelining));
    put("non_smtp_command", on_off(c.deep_non_smtp_command));
    put("bare_newline", on_off(c.deep_bare_newline));
    put("action", action_name(c.deep_action));
    put("forbidden_commands", join(c.deep_forbidden_commands, [](const std::string& s) { return s; }));

    section = "access";
    put("file", c.access_file);
    put("action", action_name(c.access_action));

    section = "cache";
    put("backend", cache_backend_name(c.cache_backend));
    put("path", c.cache_path);
    put("redis", c.cache_redis.ip_port());
    put("pregreet_ttl", ms(c.cache_pregreet_ttl));
    put("dnsbl_min_ttl", ms(c.cache_dnsbl_min_ttl));
    put("dnsbl_max_ttl", ms(c.cache_dnsbl_max_ttl));
    put("deep_ttl", ms(c.cache_deep_ttl));

    section = "tls";
    put("cert", c.tls_cert);
    put("key", c.tls_key);
    put("ciphers", c.tls_ciphers);
    put("min_version", c.tls_min_version);
    put("handshake_timeout", ms(c.tls_handshake_timeout));
    put("passthrough", on_off(c.tls_passthrough));

    section = "limits";
    put("max_connections", std::to_string(c.max_connections));
    put("per_client_connections", std::to_string(c.per_client_connections));
    put("command_time_limit", ms(c.command_time_limit));
    put("command_count_limit", std::to_string(c.command_count_limit));
    put("shutdown_grace", ms(c.shutdown_grace));

    section = "smuggling";
    put("bare_lf", c.smuggling_bare_lf == BareLf::Normalize ? "normalize" : "reject");

    section = "log";
    put("syslog", on_off(c.log_syslog));
    put("syslog_name", c.log_syslog_name);
    put("stderr", c.log_stderr ? on_off(*c.log_stderr) : "auto");

    section = "stats";
    put("listen", c.stats_listen ? c.stats_listen->ip_port() : "");

    section = "process";
    put("user", c.process_user);
    put("threads", std::to_string(c.process_threads));
    return out;
}

std::optional<std::string> ini_key_lines(std::string_view section, std::string_view key, std::string_view value) {
    if (auto lines = ValueLines(section, value, kReadable).lay_out(key)) return lines;
    return ValueLines(section, value, kCompact).lay_out(key);
}

std::string print_config(const Config& c) {
    // No file name or date in the header: printing the printed file must give the same text.
    std::string out = "# smtpscreen effective configuration (smtpscreen --print-config)\n";
    std::string_view section;
    for (const auto& v : printed_values(c)) {
        if (v.section != section) {
            section = v.section;
            out += fmt::format("\n[{}]\n", section);
        }
        // load_config refuses a value without lines; printed whole, --check names it.
        auto lines = ini_key_lines(v.section, v.key, v.value);
        out += lines ? *lines : fmt::format("{} = {}\n", v.key, v.value);
    }
    return out;
}

}  // namespace smtpscreen
