#pragma once
// The effective configuration: plain data, loaded once per start or SIGHUP and shared
// read-only (std::shared_ptr<const Config>) by every session created under it.
//
// This layer sits above the modules: each module owns the types of its settings
// (Action in screen/, DnsblSite in dnsbl/, Handoff in proxy/...), and config/keys.cpp
// holds the one table of keys that loads, checks, prints and lists them. What the
// proxy builds from a Config at start or reload (TLS contexts, the cache) is not kept
// here.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/redis_settings.h"
#include "cache/verdict_cache.h"
#include "core/address.h"
#include "core/duration.h"
#include "dnsbl/site.h"
#include "edge/ban.h"
#include "edge/greylist.h"
#include "edge/rate_limit.h"
#include "proxy/handoff_header.h"
#include "proxy/smuggling_scanner.h"
#include "screen/access_list.h"
#include "screen/action.h"

namespace smtpscreen {

// Default member values are the defaults that smtpscreen.ini(5) and the key table
// document, so Config{} is the default configuration (except banner and hostname,
// which load_config works out from banner_template and greet_hostname).
struct Config {
    std::string source_file;  // the INI it was loaded from, for messages

    // [listen]
    std::vector<Endpoint> listen_addresses{*Endpoint::parse("127.0.0.1:2525")};
    ProxyProtocol proxy_protocol = ProxyProtocol::Off;
    std::vector<Cidr> proxy_from{*Cidr::parse("127.0.0.0/8"), *Cidr::parse("::1/128")};
    Millis proxy_timeout{5000};

    // [backend]
    Endpoint backend_address = *Endpoint::parse("127.0.0.1:10025");
    Handoff handoff = Handoff::ProxyV2;
    std::optional<Endpoint> backend_source_address;    // port 0
    Millis backend_connect_timeout{5000};
    Millis backend_idle_timeout{300000};
    bool i_know_this_is_an_open_relay = false;
    bool backend_tls = false;
    std::string backend_tls_name;                       // empty: the host of backend_address
    std::string backend_tls_ca;

    // [greet]
    std::string banner_template = "$hostname ESMTP";
    std::string banner;                                 // with $hostname expanded (by load_config)
    // "220 " + banner + CRLF (by load_config, with banner): the one copy that every
    // session writes, and that every tarpitted session gives out from.
    std::string greeting;
    // The one name the proxy gives itself: in the banner's $hostname, its EHLO/HELO,
    // 221 and 421 replies, and its EHLO to the backend. As written; empty: the host's
    // name (gethostname), which load_config puts in hostname.
    std::string greet_hostname;
    std::string hostname;                               // what is used (by load_config)
    Millis greet_wait{6000};
    Action greet_action = Action::Enforce;

    // [dnsbl]
    std::vector<DnsblSite> dnsbl_sites;
    int dnsbl_threshold = 1;
    int dnsbl_allowlist_threshold = 0;
    Action dnsbl_action = Action::Enforce;
    Millis dnsbl_timeout{10000};
    std::vector<Endpoint> dnsbl_servers;                // empty: system resolver
    std::string dnsbl_reply_map_file;
    std::map<std::string, std::string> dnsbl_reply_map; // zone -> public name

    // [deep]
    bool deep_pipelining = false;
    bool deep_non_smtp_command = false;
    bool deep_bare_newline = false;
    Action deep_action = Action::Enforce;
    std::vector<std::string> deep_forbidden_commands{"CONNECT", "GET", "POST", "USER", "PASS"};
    // What the dialog's EHLO reply offers (EHLO lines, "SIZE 10240000"); unset: auto,
    // what the backend offers less what the dialog cannot keep (screen/ehlo_keywords.h).
    std::optional<std::vector<std::string>> deep_ehlo_keywords;

    // [access]
    std::string access_file;
    std::vector<AccessRule> access_rules;
    Action access_action = Action::Drop;

    // [cache]
    CacheBackend cache_backend = CacheBackend::Lmdb;
    std::string cache_path = "smtpscreen.cache";
    // For cache.backend = redis: "ip:port" ("[v6]:port") as the key table writes it,
    // "host:port" as written, or a unix socket path (starting with '/'); and the address
    // it stands for, a host name resolved when the configuration was loaded.
    std::string cache_redis = "127.0.0.1:6379";
    std::string cache_redis_resolved = "127.0.0.1:6379";
    Millis cache_redis_timeout{200};
    std::string cache_redis_password;
    int cache_redis_db = 0;
    std::string cache_redis_prefix = "smtpscreen:";
    Millis cache_cleanup_interval{12LL * 3600000};  // 0: never
    Millis cache_pregreet_ttl{86400000};
    Millis cache_dnsbl_min_ttl{60000};
    Millis cache_dnsbl_max_ttl{3600000};
    Millis cache_deep_ttl{30LL * 86400000};

    // [tls]
    // Pairwise: tls_key[i] is the key of tls_cert[i]; at most one RSA and one ECDSA pair
    // (mbedTLS picks per client, docs/design.md "TLS").
    std::vector<std::string> tls_cert;
    std::vector<std::string> tls_key;
    std::string tls_ciphers;                            // empty: secure default
    std::string tls_min_version = "1.2";
    Millis tls_handshake_timeout{30000};
    int tls_max_pending_handshakes = 256;
    // nice(2) of the threads that run handshake steps (docs/design.md, "TLS"): the event
    // loops stay at the process's own, so screening wins the CPU from a flood of handshakes.
    // kHandshakeIdle: SCHED_IDLE instead of a nice value (tls.handshake_nice = idle).
    static constexpr int kHandshakeIdle = 20;
    int tls_handshake_nice = 10;
    // Threads that run handshake steps, for all loops (0: one per CPU the process may run on).
    int tls_handshake_threads = 0;
    std::string tls_ticket_key_file;                    // empty: mbedTLS's own random keys
    // Without tls_cert: a client's STARTTLS goes through to the backend (the relay filter
    // is blind inside that TLS); off: the backend's STARTTLS is hidden from clients.
    bool tls_passthrough = true;
    // With tls_cert: a client handed off at once (PASS OLD, access permit, DNSWL) is
    // greeted, answered up to STARTTLS and its handshake by smtpscreen, and the backend is
    // connected at its first command that needs it (docs/design.md, "TLS"); off: the
    // backend at once, its own STARTTLS intercepted in the relay.
    bool tls_before_backend = true;

    // [limits]
    int max_connections = 10000;
    int per_client_connections = 50;
    RateLimit per_client_rate;                          // off
    RateLimit per_network_rate;                         // off
    NetworkPrefix network_prefix;
    int rate_table_size = 100000;
    Millis command_time_limit{300000};
    int command_count_limit = 20;
    Millis shutdown_grace{30000};

    // [ban]
    RateLimit ban_after;                                // off
    Millis ban_time{3600000};
    Millis ban_max_time{7 * 86400000LL};
    BanAction ban_action = BanAction::Drop;

    // [tarpit]
    Millis tarpit_delay{1000};
    int tarpit_max_connections = 1000;

    // [greylist]
    bool greylist_enable = false;
    Millis greylist_delay{5LL * 60000};
    Millis greylist_retry_window{2LL * 86400000};
    Millis greylist_ttl{35LL * 86400000};
    int greylist_table_size = 100000;

    // [smuggling]
    BareLf smuggling_bare_lf = BareLf::Reject;

    // [log]
    bool log_syslog = true;
    std::string log_syslog_name = "smtpscreen";
    std::optional<bool> log_stderr;                     // unset: on when in the foreground

    // [stats]
    std::optional<Endpoint> stats_listen;               // unset: no metrics endpoint

    // [process]
    std::string process_user;
    int process_threads = 1;

    // The name the backend's certificate must carry (backend.tls_name, or the IP address
    // of backend.address when it is empty).
    std::string backend_certificate_name() const {
        return backend_tls_name.empty() ? backend_address.ip() : backend_tls_name;
    }
    RateRules rate_rules() const {
        return {per_client_rate, per_network_rate, network_prefix, static_cast<size_t>(rate_table_size)};
    }
    // The failures' table shares limits.rate_table_size with the rate limits' table.
    BanRules ban_rules() const {
        return {ban_after, ban_time, ban_max_time, ban_action, static_cast<size_t>(rate_table_size)};
    }
    GreylistRules greylist_rules() const {
        return {greylist_delay, greylist_retry_window, greylist_ttl, network_prefix,
                static_cast<size_t>(greylist_table_size)};
    }
    // cache.redis* as the Redis cache takes them.
    RedisSettings redis_settings() const {
        RedisSettings s;
        s.address = cache_redis;
        s.connect_to = cache_redis_resolved;
        s.timeout = cache_redis_timeout;
        s.password = cache_redis_password;
        s.db = cache_redis_db;
        s.prefix = cache_redis_prefix;
        return s;
    }
    bool deep_tests_enabled() const { return deep_pipelining || deep_non_smtp_command || deep_bare_newline; }
    friend bool operator==(const Config&, const Config&) = default;
};

// Loads and validates an INI file. Every problem is appended to errors as
// "FILE:LINE: section.key: what is wrong (what to use instead)"; the returned Config is
// usable only when errors is empty. Also loads access.file and dnsbl.reply_map, and
// checks readability of tls.cert / tls.key when set.
std::shared_ptr<Config> load_config(const std::string& path, std::vector<std::string>& errors);

// INI text of every key in the key table's order (conf/smtpscreen.ini's), defaults
// included. For every Config that load_config returns without errors, load_config
// reads this text back to an equal Config (load_config refuses the rare value that
// could not be written back).
std::string print_config(const Config& config);

// One line per key of the table: "section.key<TAB>default<TAB>what it is", in the
// table's order (smtpscreen --list-keys; docs/config-keys.txt is its output).
std::string list_config_keys();

// Warnings that do not stop the start (e.g. handoff = none with the override).
std::vector<std::string> config_warnings(const Config& config);

// greet.hostname as it is used: the configured name, or the host's own when it is empty.
std::string effective_hostname(const std::string& greet_hostname);
// banner_template with "$hostname" / "${hostname}" replaced by hostname.
std::string expand_banner(const std::string& banner_template, const std::string& hostname);

}  // namespace smtpscreen
