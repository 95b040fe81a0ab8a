#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "config/config.h"
#include "config/ini_lines.h"
#include "config/keys.h"
#include "config/load_state.h"
#include "screen/replies.h"

namespace smtpscreen {

namespace {

// ---------------------------------------------------------------------------------
// Rules that involve more than one key.

void check_combinations(LoadState& s) {
    const Config& c = s.cfg;
    if (c.handoff == Handoff::None && !c.i_know_this_is_an_open_relay) {
        s.add(s.line_of("backend.handoff"), "backend.handoff",
              "\"none\" passes no client address, so every client looks like 127.0.0.1 to the MTA, and an MTA "
              "that trusts localhost (Postfix's default mynetworks) becomes an open relay (use proxy-v2, "
              "proxy-v1 or xclient; if the MTA really trusts nothing from 127.0.0.1, also set "
              "backend.i_know_this_is_an_open_relay = yes)");
    }
    if (c.cache_dnsbl_min_ttl > c.cache_dnsbl_max_ttl) {
        std::string key = s.is_set("cache.dnsbl_min_ttl") ? "cache.dnsbl_min_ttl" : "cache.dnsbl_max_ttl";
        s.add(s.line_of(key), key,
              fmt::format("dnsbl_min_ttl ({}) is longer than dnsbl_max_ttl ({}) (make the minimum at most the maximum)",
                          format_duration(c.cache_dnsbl_min_ttl), format_duration(c.cache_dnsbl_max_ttl)));
    }
    // smtpscreen sees a RCPT TO only in the deep tests' dialog (docs/design.md, step 6).
    if (c.greylist_enable && !c.deep_tests_enabled()) {
        s.add(s.line_of("greylist.enable"), "greylist.enable",
              "is on but no deep test is, and only the deep tests' dialog sees a RCPT TO (turn on "
              "deep.pipelining, deep.non_smtp_command or deep.bare_newline)");
    }
    if (c.greylist_retry_window <= c.greylist_delay) {
        std::string key = s.is_set("greylist.retry_window") ? "greylist.retry_window" : "greylist.delay";
        s.add(s.line_of(key), key,
              fmt::format("retry_window ({}) is not longer than delay ({}), so no retry could ever pass (make the "
                          "window longer than the delay)",
                          format_duration(c.greylist_retry_window), format_duration(c.greylist_delay)));
    }
    if (c.tls_cert.empty() != c.tls_key.empty()) {
        std::string key = c.tls_cert.empty() ? "tls.key" : "tls.cert";
        s.add(s.line_of(key), key,
              fmt::format("is set but {} is not (set both to offer STARTTLS, or neither)",
                          c.tls_cert.empty() ? "tls.cert" : "tls.key"));
    } else if (c.tls_cert.size() != c.tls_key.size()) {
        s.add(s.line_of("tls.key"), "tls.key",
              fmt::format("lists {} file(s) but tls.cert lists {} (give one key per certificate, in the same "
                          "order: tls.cert = rsa.pem, ecdsa.pem with tls.key = rsa.key, ecdsa.key)",
                          c.tls_key.size(), c.tls_cert.size()));
    } else if (c.tls_cert.size() > 2) {
        s.add(s.line_of("tls.cert"), "tls.cert",
              fmt::format("lists {} certificates; at most two are used, one RSA and one ECDSA (remove the others)",
                          c.tls_cert.size()));
    }
    if (c.proxy_protocol != ProxyProtocol::Off && c.proxy_from.empty()) {
        s.add(s.line_of("listen.proxy_from"), "listen.proxy_from",
              "is empty while listen.proxy_protocol is on, so every connection would be closed (list the load "
              "balancers' addresses, e.g. 127.0.0.0/8)");
    }
    if (c.backend_source_address && c.backend_source_address->family() != c.backend_address.family()) {
        s.add(s.line_of("backend.source_address"), "backend.source_address",
              fmt::format("{} and backend.address {} are of different address families (use an IPv{} source address)",
                          c.backend_source_address->ip(), c.backend_address.ip_port(),
                          c.backend_address.is_v6() ? 6 : 4));
    }
    // The metrics endpoint speaks HTTP on a listener of its own (smtpscreen(8), METRICS):
    // on an SMTP address one of the two would fail to bind, or share it through
    // SO_REUSEPORT and hand SMTP clients to the HTTP parser.
    if (c.stats_listen && std::find(c.listen_addresses.begin(), c.listen_addresses.end(), *c.stats_listen) !=
                              c.listen_addresses.end()) {
        s.add(s.line_of("stats.listen"), "stats.listen",
              fmt::format("{} is also in listen.address (give the metrics a port of their own, e.g. 127.0.0.1:9425)",
                          c.stats_listen->ip_port()));
    }
    if (c.cache_backend == CacheBackend::Lmdb && c.cache_path.empty()) {
        s.add(s.line_of("cache.path"), "cache.path",
              "is empty but cache.backend is lmdb (give a file path, e.g. /var/lib/smtpscreen/cache.lmdb)");
    }
}

// --print-config must write back what was loaded, in lines load_config reads. The
// compact layout fits every value read from lines of this file except words that sit
// at a line's start only with odd white space before them (a vertical tab before
// "wait=3s"), or a list item as long as a line; refuse those here, with the line they
// came from.
void check_printable(LoadState& s) {
    for (const auto& key : config_keys()) {
        std::string full = key.full_name();
        if (!s.is_set(full) || ini_key_lines(key.section, key.name, key.print(s.cfg))) continue;
        s.add(s.line_of(full), full,
              fmt::format("holds a word that --print-config cannot write back on lines of at most {} characters "
                          "(shorten the word, or put a space in it)",
                          kIniMaxLine));
    }
}

}  // namespace

std::string effective_hostname(const std::string& greet_hostname) {
    if (!greet_hostname.empty()) return greet_hostname;
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
    return host;
}

std::string expand_banner(const std::string& banner_template, const std::string& host) {
    std::string out;
    std::string_view rest = banner_template;
    while (!rest.empty()) {
        if (rest.substr(0, 11) == "${hostname}") {
            out += host;
            rest.remove_prefix(11);
        } else if (rest.substr(0, 9) == "$hostname") {
            out += host;
            rest.remove_prefix(9);
        } else {
            out += rest.front();
            rest.remove_prefix(1);
        }
    }
    return out;
}

std::shared_ptr<Config> load_config(const std::string& path, std::vector<std::string>& errors) {
    auto cfg = std::make_shared<Config>();
    cfg->source_file = path;
    cfg->hostname = effective_hostname(cfg->greet_hostname);
    cfg->banner = expand_banner(cfg->banner_template, cfg->hostname);
    cfg->greeting = replies::greeting(cfg->banner);

    std::string why;
    auto text = read_text_file(path, &why);
    if (!text) {
        errors.push_back(fmt::format("{}: cannot read the configuration: {} (check the path given with -c)", path, why));
        return cfg;
    }

    LoadState state{path, *cfg, {}, {}};
    read_ini(state, *text);

    for (const auto& key : config_keys()) {
        std::string full = key.full_name();
        auto it = state.values.find(full);
        if (it == state.values.end()) continue;
        KeyContext ctx(state, full, it->second.line);
        key.load(ctx, trim(it->second.value));
    }
    check_combinations(state);
    cfg->hostname = effective_hostname(cfg->greet_hostname);
    cfg->banner = expand_banner(cfg->banner_template, cfg->hostname);
    cfg->greeting = replies::greeting(cfg->banner);
    check_printable(state);

    // Errors in file order, whatever stage found them, so a reader can walk down the file.
    std::stable_sort(state.problems.begin(), state.problems.end(),
                     [](const Problem& a, const Problem& b) { return a.line < b.line; });
    for (auto& p : state.problems) errors.push_back(std::move(p.text));
    return cfg;
}

std::vector<std::string> config_warnings(const Config& c) {
    std::vector<std::string> out;
    auto warn = [&](std::string_view key, std::string what) {
        if (c.source_file.empty()) out.push_back(fmt::format("{}: {}", key, what));
        else out.push_back(fmt::format("{}: {}: {}", c.source_file, key, what));
    };
    if (c.handoff == Handoff::None) {
        warn("backend.handoff",
             "none (allowed by backend.i_know_this_is_an_open_relay = yes): every client reaches the MTA as "
             "127.0.0.1, so an MTA that trusts localhost is an open relay (use proxy-v2, proxy-v1 or xclient)");
    }
    if (c.tls_passthrough && c.tls_cert.empty() && !c.backend_tls &&
        (c.handoff == Handoff::ProxyV2 || c.handoff == Handoff::ProxyV1)) {
        warn("tls.passthrough",
             "on and tls.cert is empty: a client's STARTTLS goes through to the backend, and inside that TLS "
             "smtpscreen's relay filter sees nothing, so the defence against SMTP smuggling is then the backend's "
             "own (Postfix: smtpd_forbid_bare_newline = reject). Set tls.cert and tls.key so that smtpscreen "
             "terminates STARTTLS and filters every session, or tls.passthrough = off to hide the backend's "
             "STARTTLS from clients");
    }
    if (!c.backend_tls_ca.empty() && !c.backend_tls) {
        warn("backend.tls_ca", "set but backend.tls is off, so it is not used (set backend.tls = on)");
    }
    int positive = 0;
    bool any_negative = false;
    for (const auto& site : c.dnsbl_sites) {
        if (site.weight > 0) positive += site.weight;
        if (site.weight < 0) any_negative = true;
    }
    if (!c.dnsbl_sites.empty() && positive < c.dnsbl_threshold) {
        warn("dnsbl.threshold",
             fmt::format("is {} but the positive weights of dnsbl.sites add up to {}, so no client can fail the "
                         "DNSBL test (lower the threshold or raise the weights)",
                         c.dnsbl_threshold, positive));
    }
    if (c.dnsbl_allowlist_threshold < 0 && !any_negative) {
        warn("dnsbl.allowlist_threshold",
             "is negative but no dnsbl.sites entry has a negative weight, so no client can reach it (add an "
             "allowlist such as list.dnswl.org=127.0.[0..255].[1..3]*-2)");
    }
    for (const auto& entry : c.dnsbl_reply_map) {
        const std::string& zone = entry.first;  // a plain reference: clang < 16 cannot capture a binding
        bool used = std::any_of(c.dnsbl_sites.begin(), c.dnsbl_sites.end(),
                                [&](const DnsblSite& s) { return s.zone == zone; });
        if (!used) warn("dnsbl.reply_map", fmt::format("names zone \"{}\", which is not in dnsbl.sites", zone));
    }
    if (c.per_client_connections > c.max_connections) {
        warn("limits.per_client_connections",
             fmt::format("({}) is above limits.max_connections ({}), so it never applies", c.per_client_connections,
                         c.max_connections));
    }
    return out;
}

}  // namespace smtpscreen
