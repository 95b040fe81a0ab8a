#include "config/keys.h"

#include <pwd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <utility>

#include "core/credentials.h"
#include "core/resolve.h"
#include "core/text.h"
#include "screen/ehlo_keywords.h"

namespace smtpscreen {

namespace {

// postscreen_dnsbl_reply_map in texthash form: "zone  public-name" per line.
void load_reply_map(KeyContext& c, const std::string& filename, std::string_view text) {
    std::map<std::string, std::string> map;
    int lineno = 0;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        auto line = trim(text.substr(0, nl));
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++lineno;
        // As in Postfix table files, only whole lines are comments.
        if (line.empty() || line.front() == '#') continue;
        size_t gap = line.find_first_of(" \t");
        auto zone = ascii_lower(line.substr(0, gap));
        auto name = gap == std::string_view::npos ? std::string_view{} : trim(line.substr(gap));
        while (!zone.empty() && zone.back() == '.') zone.pop_back();
        auto where = fmt::format("{}:{}: {}: ", filename, lineno, c.key());
        if (name.empty()) {
            c.fail_elsewhere(where + fmt::format("{} has no public name (use \"zone  public-name\", "
                                                 "e.g. \"zen.spamhaus.org  zen.example\")",
                                                 quote(line)));
        } else if (!map.emplace(zone, std::string(name)).second) {
            c.fail_elsewhere(where + fmt::format("zone {} is listed twice (keep one)", quote(zone)));
        }
    }
    c.cfg().dnsbl_reply_map = std::move(map);
}

void load_access_file(KeyContext& c, const std::string& filename, std::string_view text) {
    std::vector<std::string> errors;
    c.cfg().access_rules = parse_access_list(text, filename, errors);
    // parse_access_list says "FILE:LINE: what"; name the key too, as every other message does.
    for (auto& e : errors) {
        size_t at = e.find(": ", filename.size());
        if (at != std::string::npos) e.insert(at + 2, c.key() + ": ");
        c.fail_elsewhere(std::move(e));
    }
}

bool is_printable_word(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) {
        auto u = static_cast<unsigned char>(ch);
        return u > 0x20 && u < 0x7f;
    });
}

// RFC 5321 4.1.2 Domain: dot-separated labels of letters, digits and inner hyphens.
// A name clients see in every greeting and EHLO reply must be one they can parse.
bool is_domain_name(std::string_view name) {
    if (name.empty() || name.size() > 253) return false;
    size_t start = 0;
    for (;;) {
        size_t dot = name.find('.', start);
        std::string_view label = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
        for (char ch : label) {
            if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') return false;
        }
        if (dot == std::string_view::npos) return true;
        start = dot + 1;
    }
}

bool user_exists(const std::string& name) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    return getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr;
}


// A value and its written form, for the common kinds of key.
ConfigKey duration_key(std::string_view section, std::string_view name, Millis Config::*field, Zero zero,
                       std::string_view doc) {
    return {section, name, doc,
            [=](KeyContext& c, std::string_view v) {
                if (auto d = c.duration(v, zero)) c.cfg().*field = *d;
            },
            [=](const Config& c) { return format_duration(c.*field); }};
}

ConfigKey switch_key(std::string_view section, std::string_view name, bool Config::*field, std::string_view doc) {
    return {section, name, doc,
            [=](KeyContext& c, std::string_view v) {
                if (auto b = c.boolean(v)) c.cfg().*field = *b;
            },
            [=](const Config& c) { return std::string(c.*field ? "on" : "off"); }};
}

ConfigKey integer_key(std::string_view section, std::string_view name, int Config::*field, long long lo,
                      long long hi, std::string_view doc) {
    return {section, name, doc,
            [=](KeyContext& c, std::string_view v) {
                if (auto n = c.integer(v, lo, hi)) c.cfg().*field = *n;
            },
            [=](const Config& c) { return std::to_string(c.*field); }};
}

template <typename T, size_t N>
ConfigKey choice_key(std::string_view section, std::string_view name, T Config::*field,
                     const std::array<std::pair<std::string_view, T>, N>& names, std::string_view what,
                     std::string_view doc) {
    return {section, name, doc,
            [=, &names](KeyContext& c, std::string_view v) {
                if (auto x = c.choice(v, names, what)) c.cfg().*field = *x;
            },
            [=, &names](const Config& c) { return std::string(choice_name(names, c.*field)); }};
}

ConfigKey action_key(std::string_view section, std::string_view name, Action Config::*field, std::string_view doc) {
    return choice_key(section, name, field, kActionNames, "an action", doc);
}

// limits.per_client_rate and limits.per_network_rate.
ConfigKey rate_key(std::string_view name, RateLimit Config::*field, std::string_view doc) {
    return {"limits", name, doc,
            [=](KeyContext& c, std::string_view v) {
                std::string why;
                if (auto rate = parse_rate_limit(v, &why)) c.cfg().*field = *rate;
                else c.fail(why);
            },
            [=](const Config& c) { return format_rate_limit(c.*field); }};
}

// Taken as written (after trimming).
ConfigKey text_key(std::string_view section, std::string_view name, std::string Config::*field,
                   std::string_view doc) {
    return {section, name, doc, [=](KeyContext& c, std::string_view v) { c.cfg().*field = std::string(v); },
            [=](const Config& c) { return c.*field; }};
}

// One printable word, no spaces: `what` names it in the message, `example` shows one.
ConfigKey word_key(std::string_view section, std::string_view name, std::string Config::*field,
                   std::string_view what, std::string_view example, std::string_view doc) {
    return {section, name, doc,
            [=](KeyContext& c, std::string_view v) {
                if (!is_printable_word(v)) {
                    c.fail(fmt::format("{} is not {} (use one word without spaces, e.g. {})", quote(v), what, example));
                    return;
                }
                c.cfg().*field = std::string(v);
            },
            [=](const Config& c) { return c.*field; }};
}

// A file of rules read at load: the key keeps the file's name (as --print-config
// writes it) and `read` parses the text into the Config. Empty names no file.
using FileReader = void (*)(KeyContext&, const std::string& filename, std::string_view text);
ConfigKey rules_file_key(std::string_view section, std::string_view name, std::string Config::*field,
                         FileReader read, std::string_view doc) {
    return {section, name, doc,
            [=](KeyContext& c, std::string_view v) {
                c.cfg().*field = std::string(v);
                if (v.empty()) return;
                if (auto text = c.file(v)) read(c, std::string(v), *text);
            },
            [=](const Config& c) { return c.*field; }};
}

// PEM files the TLS setup opens later, as a comma list (tls.cert and tls.key: one per key
// type); a bare name may come from systemd's $CREDENTIALS_DIRECTORY. Loading only checks
// that each can be read.
ConfigKey credential_files_key(std::string_view section, std::string_view name,
                               std::vector<std::string> Config::*field, std::string_view doc) {
    return {section, name, doc,
            [=](KeyContext& c, std::string_view v) {
                auto& files = c.cfg().*field;
                files.clear();
                for (std::string_view item : split_list(v)) {
                    files.push_back(credential_path(item));
                    c.file(files.back());
                }
            },
            [=](const Config& c) {
                std::string out;
                for (const auto& f : c.*field) out += (out.empty() ? "" : ", ") + f;
                return out;
            }};
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

std::string endpoint_list(const std::vector<Endpoint>& list) {
    return join(list, [](const Endpoint& e) { return e.ip_port(); });
}

std::vector<ConfigKey> make_keys() {
    return {
        // [listen]
        {"listen", "address", "where to accept SMTP: comma list of ip:port or [ipv6]:port",
         [](KeyContext& c, std::string_view v) {
             auto list = c.endpoints(v, std::nullopt);
             if (list && list->empty()) c.fail("is empty (use at least one ip:port, e.g. 0.0.0.0:25)");
             else if (list) c.cfg().listen_addresses = *list;
         },
         [](const Config& c) { return endpoint_list(c.listen_addresses); }},
        choice_key("listen", "proxy_protocol", &Config::proxy_protocol, kProxyProtocolNames, "a PROXY protocol mode",
                   "the PROXY header a load balancer in front must send: off, v1, v2 or auto"),
        {"listen", "proxy_from", "comma list of CIDRs allowed to send a PROXY header; others are closed",
         [](KeyContext& c, std::string_view v) {
             if (auto list = c.cidrs(v)) c.cfg().proxy_from = *list;
         },
         [](const Config& c) { return join(c.proxy_from, [](const Cidr& n) { return n.to_string(); }); }},
        duration_key("listen", "proxy_timeout", &Config::proxy_timeout, Zero::Refused,
                     "how long the complete PROXY header may take"),

        // [backend]
        {"backend", "address", "the MTA's ip:port",
         [](KeyContext& c, std::string_view v) {
             if (auto e = c.endpoint(v, std::nullopt)) c.cfg().backend_address = *e;
         },
         [](const Config& c) { return c.backend_address.ip_port(); }},
        choice_key("backend", "handoff", &Config::handoff, kHandoffNames, "a handoff method",
                   "how the MTA learns the client's address: proxy-v2, proxy-v1, xclient or none"),
        {"backend", "source_address", "local IP to connect to the MTA from (empty: the kernel chooses)",
         [](KeyContext& c, std::string_view v) {
             if (v.empty()) {
                 c.cfg().backend_source_address.reset();
             } else if (auto e = Endpoint::parse_ip(v)) {
                 c.cfg().backend_source_address = *e;
             } else {
                 c.fail(quote(v) + " is not an IP address (use an address without a port, e.g. 127.0.0.25)");
             }
         },
         [](const Config& c) { return c.backend_source_address ? c.backend_source_address->ip() : std::string(); }},
        duration_key("backend", "connect_timeout", &Config::backend_connect_timeout, Zero::Refused,
                     "how long connecting to the MTA and its 220 greeting may take"),
        duration_key("backend", "idle_timeout", &Config::backend_idle_timeout, Zero::Refused,
                     "a relayed client/MTA pair is closed after this long without traffic"),
        {"backend", "i_know_this_is_an_open_relay", "yes allows handoff = none",
         [](KeyContext& c, std::string_view v) {
             if (auto b = c.boolean(v)) c.cfg().i_know_this_is_an_open_relay = *b;
         },
         [](const Config& c) { return std::string(c.i_know_this_is_an_open_relay ? "yes" : "no"); }},
        switch_key("backend", "tls", &Config::backend_tls, "STARTTLS towards the MTA: on or off"),
        {"backend", "tls_name", "the name the MTA's certificate must carry (empty: backend.address's IP address)",
         [](KeyContext& c, std::string_view v) {
             // A DNS name (letters, digits, '-', '.'; a "*." is no name to expect) or an
             // IP address, which the certificate must list as an iPAddress.
             const bool ip = Endpoint::parse_ip(v).has_value();
             const bool dns = !v.empty() && v.size() <= 253 && v.front() != '.' && v.front() != '-' &&
                              std::all_of(v.begin(), v.end(), [](char ch) {
                                  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                                         (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
                              });
             if (!v.empty() && !ip && !dns) {
                 c.fail(quote(v) + " is neither a host name nor an IP address (use the name in the backend's "
                        "certificate, e.g. mx.example.org; empty: the address of backend.address)");
                 return;
             }
             c.cfg().backend_tls_name = std::string(v);
         },
         [](const Config& c) { return c.backend_tls_name; }},
        {"backend", "tls_ca", "PEM CA file the MTA's certificate must verify against (empty: not verified)",
         [](KeyContext& c, std::string_view v) {
             c.cfg().backend_tls_ca = std::string(v);
             if (!v.empty()) c.file(v);
         },
         [](const Config& c) { return c.backend_tls_ca; }},

        // [greet]
        {"greet", "banner", "text of the 220 greeting; $hostname becomes greet.hostname",
         [](KeyContext& c, std::string_view v) {
             if (v.empty()) {
                 c.fail("is empty (use e.g. $hostname ESMTP)");
                 return;
             }
             bool printable = std::all_of(v.begin(), v.end(), [](char ch) {
                 auto u = static_cast<unsigned char>(ch);
                 return u >= 0x20 && u != 0x7f;
             });
             if (!printable) {
                 c.fail("contains control characters (use plain text, e.g. $hostname ESMTP)");
                 return;
             }
             c.cfg().banner_template = std::string(v);
         },
         [](const Config& c) { return c.banner_template; }},
        {"greet", "hostname", "the name in the banner and the proxy's own replies (empty: the host's name)",
         [](KeyContext& c, std::string_view v) {
             if (!v.empty() && !is_domain_name(v)) {
                 c.fail(quote(v) + " is not a host name (use letters, digits, hyphens and dots, e.g. "
                                   "mx.example.org, or leave it empty for the host's own name)");
                 return;
             }
             c.cfg().greet_hostname = std::string(v);
         },
         [](const Config& c) { return c.greet_hostname; }},
        duration_key("greet", "wait", &Config::greet_wait, Zero::Refused,
                     "how long to watch for a client that talks before its turn"),
        action_key("greet", "action", &Config::greet_action,
                   "for a client that talks before its turn: ignore, enforce, drop or tarpit"),

        // [dnsbl]
        {"dnsbl", "sites", "DNS lists, comma list of zone[=filter][*weight] (empty: no DNSBL test)",
         [](KeyContext& c, std::string_view v) {
             std::vector<std::string> errors;
             auto sites = parse_dnsbl_sites(v, &errors);
             for (const auto& e : errors) c.fail(e);
             c.cfg().dnsbl_sites = std::move(sites);
         },
         // One ", " between sites, so a long list can be wrapped at the spaces even
         // when the file wrote it without any.
         [](const Config& c) { return join(c.dnsbl_sites, [](const DnsblSite& s) { return s.text; }); }},
        integer_key("dnsbl", "threshold", &Config::dnsbl_threshold, 1, INT_MAX,
                    "a client whose summed weights reach this fails the DNSBL test"),
        {"dnsbl", "allowlist_threshold", "0: off; negative: a client scoring at or below it passes at once",
         [](KeyContext& c, std::string_view v) {
             auto n = c.integer(v, INT_MIN, INT_MAX);
             if (n && *n > 0) {
                 c.fail(quote(v) + " is positive (use 0 to turn the allowlist off, or a negative score such as -1)");
             } else if (n) {
                 c.cfg().dnsbl_allowlist_threshold = *n;
             }
         },
         [](const Config& c) { return std::to_string(c.dnsbl_allowlist_threshold); }},
        action_key("dnsbl", "action", &Config::dnsbl_action, "for a listed client: ignore, enforce, drop or tarpit"),
        duration_key("dnsbl", "timeout", &Config::dnsbl_timeout, Zero::Refused, "how long a DNSBL query may take"),
        {"dnsbl", "servers", "DNS servers, comma list of ip[:port] (empty: the system resolver)",
         [](KeyContext& c, std::string_view v) {
             if (auto list = c.endpoints(v, uint16_t{53})) c.cfg().dnsbl_servers = *list;
         },
         [](const Config& c) { return endpoint_list(c.dnsbl_servers); }},
        rules_file_key("dnsbl", "reply_map", &Config::dnsbl_reply_map_file, load_reply_map,
                       "file of \"zone  public-name\" lines: the name clients see instead of the zone"),

        // [deep]
        switch_key("deep", "pipelining", &Config::deep_pipelining,
                   "fail a client that pipelines when PIPELINING was not offered: on or off"),
        switch_key("deep", "non_smtp_command", &Config::deep_non_smtp_command,
                   "fail a client that sends a forbidden or non-SMTP command: on or off"),
        switch_key("deep", "bare_newline", &Config::deep_bare_newline,
                   "fail a client that ends a line with a bare LF: on or off"),
        action_key("deep", "action", &Config::deep_action,
                   "for a client that fails a deep test: ignore, enforce, drop or tarpit"),
        {"deep", "forbidden_commands", "commands that fail the non-SMTP test, comma list",
         [](KeyContext& c, std::string_view v) {
             std::vector<std::string> words;
             for (auto item : split_list(v)) {
                 if (!is_printable_word(item)) {
                     c.fail(quote(item) + " is not a command word (use one word per entry, e.g. CONNECT, GET)");
                     return;
                 }
                 // SMTP verbs are case-insensitive (RFC 5321 §2.4); store them upper-case.
                 words.push_back(ascii_upper(item));
             }
             c.cfg().deep_forbidden_commands = std::move(words);
         },
         [](const Config& c) { return join(c.deep_forbidden_commands, [](const std::string& s) { return s; }); }},
        {"deep", "ehlo_keywords",
         "what the EHLO reply offers during the deep tests: auto (what the backend offers) or a comma list",
         [](KeyContext& c, std::string_view v) {
             if (ascii_lower(v) == "auto") {
                 c.cfg().deep_ehlo_keywords.reset();
                 return;
             }
             std::vector<std::string> lines;
             for (auto item : split_list(v)) {
                 if (!valid_ehlo_line(item)) {
                     c.fail(quote(item) + " is not an EHLO keyword (use a keyword and its parameters, e.g. "
                                          "SIZE 10240000, 8BITMIME; or auto)");
                     return;
                 }
                 if (auto why = unofferable_reason(item); !why.empty()) {
                     c.fail(fmt::format("{} cannot be offered: {} (leave it out)", quote(item), why));
                     return;
                 }
                 // One space between words, as an EHLO reply writes them (and as a
                 // wrapped --print-config line reads back).
                 std::string line;
                 for (auto word : split(item, " ")) {
                     if (word.empty()) continue;
                     line += line.empty() ? "" : " ";
                     line += word;
                 }
                 lines.push_back(std::move(line));
             }
             c.cfg().deep_ehlo_keywords = std::move(lines);
         },
         [](const Config& c) {
             if (!c.deep_ehlo_keywords) return std::string("auto");
             return join(*c.deep_ehlo_keywords, [](const std::string& s) { return s; });
         }},

        // [access]
        rules_file_key("access", "file", &Config::access_file, load_access_file,
                       "file of \"ip[/len] permit|reject\" lines, first match wins (empty: none)"),
        action_key("access", "action", &Config::access_action,
                   "for a client that a reject rule matches: ignore, enforce, drop or tarpit"),

        // [cache]
        choice_key("cache", "backend", &Config::cache_backend, kCacheBackendNames, "a cache backend",
                   "where passes are remembered: lmdb (a file), redis (shared by instances) or memory (lost at exit)"),
        text_key("cache", "path", &Config::cache_path, "the lmdb file"),
        {"cache", "redis", "for cache.backend = redis: the server's host:port, or a unix socket path (/...)",
         [](KeyContext& c, std::string_view v) {
             if (!v.empty() && v.front() == '/') {
                 // sun_path holds 108 bytes with its terminating NUL.
                 if (v.size() > 107) {
                     c.fail(quote(v) + " is longer than a unix socket path may be (107 bytes; use a shorter path)");
                     return;
                 }
                 c.cfg().cache_redis = c.cfg().cache_redis_resolved = std::string(v);
                 return;
             }
             if (Endpoint::parse(v)) {
                 if (auto e = c.endpoint(v, std::nullopt)) {
                     c.cfg().cache_redis = c.cfg().cache_redis_resolved = e->ip_port();
                 }
                 return;
             }
             // A host name is resolved here, while the configuration is loaded (start,
             // --check, SIGHUP), so that no event loop ever waits for a resolver.
             const size_t colon = v.rfind(':');
             const std::string_view host = colon == std::string_view::npos ? v : v.substr(0, colon);
             uint16_t port = 0;
             const std::string_view digits = colon == std::string_view::npos ? std::string_view() : v.substr(colon + 1);
             auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
             if (host.empty() || host.find_first_of(":[]") != std::string_view::npos || digits.empty() ||
                 ec != std::errc{} || end != digits.data() + digits.size() || port == 0) {
                 c.fail(quote(v) + " is not a host:port or a unix socket path (use e.g. 127.0.0.1:6379, "
                                   "[::1]:6379, redis.example.org:6379 or /run/redis/redis-server.sock)");
                 return;
             }
             std::string why;
             auto e = resolve_host(std::string(host), port, why);
             if (!e) {
                 c.fail(fmt::format("{}: the host name {} does not resolve ({}); fix the name, add it to "
                                    "/etc/hosts or DNS, or give Redis's IP address",
                                    quote(v), host, why));
                 return;
             }
             c.cfg().cache_redis = std::string(v);
             c.cfg().cache_redis_resolved = e->ip_port();
         },
         [](const Config& c) { return c.cache_redis; }},
        duration_key("cache", "redis_timeout", &Config::cache_redis_timeout, Zero::Refused,
                     "the longest a session waits for Redis; then it carries on as a cache miss"),
        text_key("cache", "redis_password", &Config::cache_redis_password,
                 "sent with AUTH on every connection to Redis (empty: no AUTH)"),
        integer_key("cache", "redis_db", &Config::cache_redis_db, 0, INT_MAX,
                    "the Redis database, chosen with SELECT on every connection"),
        // Never empty: `smtpscreen cache flush` would then delete every key of the database.
        word_key("cache", "redis_prefix", &Config::cache_redis_prefix, "a key prefix", "smtpscreen:",
                 "the start of every Redis key smtpscreen writes, lists and flushes"),
        duration_key("cache", "cleanup_interval", &Config::cache_cleanup_interval, Zero::Allowed,
                     "how often expired records are removed from an lmdb cache (0: never)"),
        duration_key("cache", "pregreet_ttl", &Config::cache_pregreet_ttl, Zero::Allowed,
                     "how long a pregreet pass is remembered"),
        duration_key("cache", "dnsbl_min_ttl", &Config::cache_dnsbl_min_ttl, Zero::Allowed,
                     "a DNSBL pass is remembered for the lists' TTL, but at least this long"),
        duration_key("cache", "dnsbl_max_ttl", &Config::cache_dnsbl_max_ttl, Zero::Allowed,
                     "a DNSBL pass is remembered for the lists' TTL, but at most this long"),
        duration_key("cache", "deep_ttl", &Config::cache_deep_ttl, Zero::Allowed,
                     "how long a deep-test pass is remembered"),

        // [tls]
        credential_files_key("tls", "cert", &Config::tls_cert,
                             "PEM certificate chain(s) for STARTTLS towards clients, comma list: one RSA and "
                             "one ECDSA (with tls.key)"),
        credential_files_key("tls", "key", &Config::tls_key,
                             "PEM private key(s) of tls.cert, comma list in the same order"),
        text_key("tls", "ciphers", &Config::tls_ciphers,
                 "mbedTLS cipher suite names, comma list (empty: a secure default)"),
        {"tls", "min_version", "lowest TLS version accepted: 1.2 (the packaged mbedTLS offers no other)",
         [](KeyContext& c, std::string_view v) {
             if (v != "1.2") {
                 c.fail(quote(v) + " is not offered (use 1.2, the only version the packaged mbedTLS offers)");
                 return;
             }
             c.cfg().tls_min_version = std::string(v);
         },
         [](const Config& c) { return c.tls_min_version; }},
        duration_key("tls", "handshake_timeout", &Config::tls_handshake_timeout, Zero::Refused,
                     "how long a TLS handshake may take"),
        integer_key("tls", "max_pending_handshakes", &Config::tls_max_pending_handshakes, 1, 1000000,
                    "most client TLS handshakes in progress at once; beyond it STARTTLS gets 454 and the "
                    "session goes on in plain text"),
        integer_key("tls", "handshake_threads", &Config::tls_handshake_threads, 0, 1024,
                    "threads that run the public-key steps of TLS handshakes for every event loop "
                    "(0: one per CPU the process may run on)"),
        {"tls", "handshake_nice",
         "nice value of the threads that run TLS handshake steps, above the event loops' so that screening "
         "wins the CPU from a flood of handshakes (0: the loops' own; idle: only the CPU nothing else wants)",
         [](KeyContext& c, std::string_view v) {
             if (v == "idle")
                 c.cfg().tls_handshake_nice = Config::kHandshakeIdle;
             else if (auto n = c.integer(v, 0, 19))
                 c.cfg().tls_handshake_nice = static_cast<int>(*n);
         },
         [](const Config& c) {
             return c.tls_handshake_nice == Config::kHandshakeIdle ? std::string("idle")
                                                                   : std::to_string(c.tls_handshake_nice);
         }},
        {"tls", "ticket_key_file",
         "80 random bytes (openssl rand 80): session-ticket keys shared by instances (empty: random per start)",
         [](KeyContext& c, std::string_view v) {
             c.cfg().tls_ticket_key_file = credential_path(v);
             if (!v.empty()) c.file(c.cfg().tls_ticket_key_file);
         },
         [](const Config& c) { return c.tls_ticket_key_file; }},
        switch_key("tls", "passthrough", &Config::tls_passthrough,
                   "without tls.cert: pass the backend's STARTTLS through (on) or hide it (off)"),
        switch_key("tls", "before_backend", &Config::tls_before_backend,
                   "with tls.cert: a client handed off at once gets smtpscreen's greeting, EHLO and STARTTLS, "
                   "and the backend is connected at its first command that needs it (off: at once)"),

        // [limits]
        integer_key("limits", "max_connections", &Config::max_connections, 1, INT_MAX,
                    "most connections at once; beyond it 421 and close"),
        integer_key("limits", "per_client_connections", &Config::per_client_connections, 1, INT_MAX,
                    "most connections at once from one client address"),
        rate_key("per_client_rate", &Config::per_client_rate,
                 "N/PERIOD: most new connections from one client address within PERIOD (0: off)"),
        rate_key("per_network_rate", &Config::per_network_rate,
                 "N/PERIOD: most new connections from one network (limits.network_prefix) within PERIOD (0: off)"),
        {"limits", "network_prefix", "IPv4 and IPv6 prefix lengths of a network, for limits.per_network_rate",
         [](KeyContext& c, std::string_view v) {
             auto items = split_list(v);
             auto bad = [&] {
                 c.fail(quote(v) + " is not two prefix lengths (use the IPv4 one from 1 to 32, then the IPv6 one "
                                   "from 1 to 128, e.g. 24, 64)");
             };
             if (items.size() != 2) return bad();
             int lengths[2] = {0, 0};
             const int most[2] = {32, 128};
             for (size_t i = 0; i < 2; ++i) {
                 auto [end, ec] = std::from_chars(items[i].data(), items[i].data() + items[i].size(), lengths[i]);
                 if (ec != std::errc{} || end != items[i].data() + items[i].size() || lengths[i] < 1 ||
                     lengths[i] > most[i]) {
                     return bad();
                 }
             }
             c.cfg().network_prefix = {lengths[0], lengths[1]};
         },
         [](const Config& c) { return fmt::format("{}, {}", c.network_prefix.v4, c.network_prefix.v6); }},
        integer_key("limits", "rate_table_size", &Config::rate_table_size, 1, 10000000,
                    "most client addresses and networks counted at once for the rate limits; the oldest go first"),
        duration_key("limits", "command_time_limit", &Config::command_time_limit, Zero::Refused,
                     "the most time one command line may take while smtpscreen speaks SMTP itself"),
        integer_key("limits", "command_count_limit", &Config::command_count_limit, 1, INT_MAX,
                    "during deep tests, the most commands before handoff"),
        duration_key("limits", "shutdown_grace", &Config::shutdown_grace, Zero::Allowed,
                     "how long SIGTERM lets sessions in progress go on"),

        // [ban]
        {"ban", "after", "N/PERIOD: a client that fails tests N times within PERIOD is banned (0: off)",
         [](KeyContext& c, std::string_view v) {
             std::string why;
             if (auto rate = parse_rate_limit(v, &why, "failures")) c.cfg().ban_after = *rate;
             else c.fail(why);
         },
         [](const Config& c) { return format_rate_limit(c.ban_after); }},
        duration_key("ban", "time", &Config::ban_time, Zero::Refused,
                     "how long a first ban lasts; each repeat ban of the client doubles it"),
        duration_key("ban", "max_time", &Config::ban_max_time, Zero::Refused,
                     "the longest ban, and how long a client's bans are remembered after the last one ends"),
        {"ban", "action", "what a banned client gets at connect: drop (521 and close) or tarpit",
         [](KeyContext& c, std::string_view v) {
             if (auto action = c.choice(v, kBanActionNames, "a ban action")) c.cfg().ban_action = *action;
         },
         [](const Config& c) { return std::string(choice_name(kBanActionNames, c.ban_action)); }},

        // [tarpit]
        duration_key("tarpit", "delay", &Config::tarpit_delay, Zero::Refused,
                     "a tarpitted client gets one byte of each reply per delay"),
        integer_key("tarpit", "max_connections", &Config::tarpit_max_connections, 1, INT_MAX,
                    "most clients tarpitted at once; the next one is dropped instead"),

        // [greylist]
        switch_key("greylist", "enable", &Config::greylist_enable,
                   "with deep tests: 450 at the first RCPT TO of a new (network, sender, recipient) triplet"),
        duration_key("greylist", "delay", &Config::greylist_delay, Zero::Allowed,
                     "a retry of the triplet passes this long after its first attempt"),
        duration_key("greylist", "retry_window", &Config::greylist_retry_window, Zero::Refused,
                     "a retry passes only this long after the first attempt; later ones start again"),
        duration_key("greylist", "ttl", &Config::greylist_ttl, Zero::Refused,
                     "how long a client that passed greylisting is remembered (renewed at each use)"),
        integer_key("greylist", "table_size", &Config::greylist_table_size, 1, 10000000,
                    "most triplets kept at once; the least recently seen go first"),

        // [smuggling]
        choice_key("smuggling", "bare_lf", &Config::smuggling_bare_lf, kBareLfNames, "a bare LF policy",
                   "a bare LF in relayed DATA: reject the message or normalize it to CRLF"),

        // [log]
        switch_key("log", "syslog", &Config::log_syslog, "log to syslog (facility mail): on or off"),
        word_key("log", "syslog_name", &Config::log_syslog_name, "a syslog tag", "smtpscreen or postfix/postscreen",
                 "the syslog tag (postfix/postscreen for fail2ban's postfix filter)"),
        {"log", "stderr", "log to stderr: on, off or auto (on, unless stderr is the journal and log.syslog is on)",
         [](KeyContext& c, std::string_view v) {
             // "auto" is the written form of the default (on in the foreground), so that
             // --print-config can say it and load its own output.
             auto l = ascii_lower(v);
             if (l == "auto") c.cfg().log_stderr.reset();
             else if (l == "on" || l == "yes" || l == "true") c.cfg().log_stderr = true;
             else if (l == "off" || l == "no" || l == "false") c.cfg().log_stderr = false;
             else c.fail(quote(v) + " is not a yes/no value (use auto, on or off)");
         },
         [](const Config& c) { return std::string(!c.log_stderr ? "auto" : *c.log_stderr ? "on" : "off"); }},

        // [stats]
        {"stats", "listen", "ip:port of the Prometheus /metrics endpoint, never an SMTP port (empty: none)",
         [](KeyContext& c, std::string_view v) {
             if (v.empty()) {
                 c.cfg().stats_listen.reset();
             } else if (auto e = c.endpoint(v, std::nullopt)) {
                 c.cfg().stats_listen = *e;
             }
         },
         [](const Config& c) { return c.stats_listen ? c.stats_listen->ip_port() : std::string(); }},

        // [process]
        {"process", "user", "user to run as after binding the listen addresses (empty: stay)",
         [](KeyContext& c, std::string_view v) {
             if (!v.empty() && !user_exists(std::string(v))) {
                 c.fail(quote(v) + " is not a user on this host (create it, or fix the name)");
                 return;
             }
             c.cfg().process_user = std::string(v);
         },
         [](const Config& c) { return c.process_user; }},
        integer_key("process", "threads", &Config::process_threads, 1, 64,
                    "event-loop threads sharing the listen sockets"),
    };
}

}  // namespace

std::string ConfigKey::full_name() const {
    return fmt::format("{}.{}", section, name);
}

const std::vector<ConfigKey>& config_keys() {
    static const std::vector<ConfigKey> keys = make_keys();
    return keys;
}

const ConfigKey* find_config_key(std::string_view section, std::string_view name) {
    for (const auto& k : config_keys()) {
        if (k.section == section && k.name == name) return &k;
    }
    return nullptr;
}

bool known_section(std::string_view section) {
    const auto& keys = config_keys();
    return std::any_of(keys.begin(), keys.end(), [&](const ConfigKey& k) { return k.section == section; });
}

std::string section_list() {
    std::string out;
    std::string_view last;
    for (const auto& k : config_keys()) {
        if (k.section == last) continue;
        last = k.section;
        out += out.empty() ? "" : ", ";
        out += fmt::format("[{}]", k.section);
    }
    return out;
}

static size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

// "(did you mean greet.wait?)" for a typo or a key put in the wrong section,
// otherwise the keys the section does have.
std::string unknown_key_hint(std::string_view section, std::string_view name) {
    std::string wanted = ascii_lower(fmt::format("{}.{}", section, name));
    std::string best;
    size_t best_distance = 3;
    for (const auto& k : config_keys()) {
        std::string full = fmt::format("{}.{}", k.section, k.name);
        size_t d = k.name == ascii_lower(name) ? 1 : edit_distance(wanted, full);
        if (d < best_distance) {
            best_distance = d;
            best = full;
        }
    }
    if (!best.empty()) return fmt::format("(did you mean {}?)", best);
    std::string keys;
    for (const auto& k : config_keys()) {
        if (k.section != section) continue;
        keys += keys.empty() ? "" : ", ";
        keys += k.name;
    }
    return fmt::format("(the keys of [{}] are {})", section, keys);
}

}  // namespace smtpscreen
