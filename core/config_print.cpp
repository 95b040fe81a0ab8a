#include <fmt/format.h>

#include "core/config.h"

namespace smtpscreen {

namespace {

// load_config refuses lines longer than inih's 200-byte buffer (197 characters);
// wrap only what would not fit, since tools that read the output line by line
// handle a continuation line less well than a long one.
constexpr size_t kMaxLine = 190;

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

// The text printed so far, and the section being printed (a continuation line must not
// read as one of its keys).
struct Printed {
    std::string text;
    std::string_view section;
};

// "key = value", wrapped onto indented continuation lines at single spaces when long.
// load_config joins continuation lines with one space, so the value reads back the same.
void put(Printed& out, std::string_view key, std::string_view value) {
    std::string line = fmt::format("{} =", key);
    if (!value.empty()) line += " ";
    while (line.size() + value.size() > kMaxLine) {
        size_t room = kMaxLine > line.size() ? kMaxLine - line.size() : 0;
        size_t cut = std::string_view::npos;
        for (size_t i = std::min(room, value.size() - 1); i > 0; --i) {
            if (value[i] == ' ' && value[i - 1] != ' ' && i + 1 < value.size() && value[i + 1] != ' ' &&
                ini_line_continues(out.section, value.substr(i + 1))) {
                cut = i;
                break;
            }
        }
        if (cut == std::string_view::npos) break;  // one long word: leave it whole
        out.text += line;
        out.text.append(value.substr(0, cut));
        out.text += "\n";
        value.remove_prefix(cut + 1);
        line = "    ";
    }
    out.text += line;
    out.text.append(value);
    out.text += "\n";
}

void section(Printed& out, std::string_view name) {
    out.text += fmt::format("\n[{}]\n", name);
    out.section = name;
}

// From the parsed sites, one ", " between each, so a long list can be wrapped at the
// spaces even when the file wrote it without any.
std::string dnsbl_sites_text(const Config& c) {
    if (c.dnsbl_sites.empty()) return c.dnsbl_sites_text;
    return join(c.dnsbl_sites, [](const DnsblSite& s) { return s.text; });
}

}  // namespace

std::string print_config(const Config& c) {
    // No file name or date in the header: printing the printed file must give the same text.
    Printed out{"# smtpscreen effective configuration (smtpscreen --print-config)\n", {}};
    auto ms = [](Millis d) { return format_duration(d); };
    auto endpoint = [](const Endpoint& e) { return e.ip_port(); };

    section(out, "listen");
    put(out, "address", join(c.listen_addresses, endpoint));
    put(out, "proxy_protocol", proxy_protocol_name(c.proxy_protocol));
    put(out, "proxy_from", join(c.proxy_from, [](const Cidr& n) { return n.to_string(); }));
    put(out, "proxy_timeout", ms(c.proxy_timeout));

    section(out, "backend");
    put(out, "address", c.backend_address.ip_port());
    put(out, "handoff", handoff_name(c.handoff));
    put(out, "source_address", c.backend_source_address ? c.backend_source_address->ip() : "");
    put(out, "connect_timeout", ms(c.backend_connect_timeout));
    put(out, "idle_timeout", ms(c.backend_idle_timeout));
    put(out, "i_know_this_is_an_open_relay", c.i_know_this_is_an_open_relay ? "yes" : "no");
    put(out, "tls", on_off(c.backend_tls));
    put(out, "tls_ca", c.backend_tls_ca);

    section(out, "greet");
    put(out, "banner", c.banner_template);
    put(out, "wait", ms(c.greet_wait));
    put(out, "action", action_name(c.greet_action));

    section(out, "dnsbl");
    put(out, "sites", dnsbl_sites_text(c));
    put(out, "threshold", std::to_string(c.dnsbl_threshold));
    put(out, "allowlist_threshold", std::to_string(c.dnsbl_allowlist_threshold));
    put(out, "action", action_name(c.dnsbl_action));
    put(out, "timeout", ms(c.dnsbl_timeout));
    put(out, "servers", join(c.dnsbl_servers, endpoint));
    put(out, "reply_map", c.dnsbl_reply_map_file);

    section(out, "deep");
    put(out, "pipelining", on_off(c.deep_pipelining));
    put(out, "non_smtp_command", on_off(c.deep_non_smtp_command));
    put(out, "bare_newline", on_off(c.deep_bare_newline));
    put(out, "action", action_name(c.deep_action));
    put(out, "forbidden_commands", join(c.deep_forbidden_commands, [](const std::string& s) { return s; }));

    section(out, "access");
    put(out, "file", c.access_file);
    put(out, "action", action_name(c.access_action));

    section(out, "cache");
    put(out, "backend", cache_backend_name(c.cache_backend));
    put(out, "path", c.cache_path);
    put(out, "redis", c.cache_redis.ip_port());
    put(out, "pregreet_ttl", ms(c.cache_pregreet_ttl));
    put(out, "dnsbl_min_ttl", ms(c.cache_dnsbl_min_ttl));
    put(out, "dnsbl_max_ttl", ms(c.cache_dnsbl_max_ttl));
    put(out, "deep_ttl", ms(c.cache_deep_ttl));

    section(out, "tls");
    put(out, "cert", c.tls_cert);
    put(out, "key", c.tls_key);
    put(out, "ciphers", c.tls_ciphers);
    put(out, "min_version", c.tls_min_version);
    put(out, "handshake_timeout", ms(c.tls_handshake_timeout));

    section(out, "limits");
    put(out, "max_connections", std::to_string(c.max_connections));
    put(out, "per_client_connections", std::to_string(c.per_client_connections));
    put(out, "command_time_limit", ms(c.command_time_limit));
    put(out, "command_count_limit", std::to_string(c.command_count_limit));
    put(out, "shutdown_grace", ms(c.shutdown_grace));

    section(out, "smuggling");
    put(out, "bare_lf", c.smuggling_bare_lf == BareLf::Normalize ? "normalize" : "reject");

    section(out, "log");
    put(out, "syslog", on_off(c.log_syslog));
    put(out, "syslog_name", c.log_syslog_name);
    put(out, "stderr", c.log_stderr ? on_off(*c.log_stderr) : "auto");

    section(out, "stats");
    put(out, "listen", c.stats_listen ? c.stats_listen->ip_port() : "");

    section(out, "process");
    put(out, "user", c.process_user);
    put(out, "threads", std::to_string(c.process_threads));
    return out.text;
}

}  // namespace smtpscreen
