#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "config/ini_lines.h"
#include "fixtures.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {


struct Loaded {
    std::string file;
    std::shared_ptr<Config> config;
    std::vector<std::string> errors;

    bool has(const std::string& needle) const {
        for (const auto& e : errors) {
            if (e.find(needle) != std::string::npos) return true;
        }
        return false;
    }
    // The error for this key on this line: "FILE:LINE: key: ..."
    std::string at(int line, const std::string& key) const {
        std::string prefix = file + ":" + std::to_string(line) + ": " + key + ": ";
        for (const auto& e : errors) {
            if (e.rfind(prefix, 0) == 0) return e;
        }
        return {};
    }
};

Loaded load(const TempDir& dir, const std::string& text) {
    Loaded l;
    l.file = dir.write("smtpscreen.ini", text);
    l.config = load_config(l.file, l.errors);
    REQUIRE(l.config != nullptr);
    return l;
}

std::string all(const std::vector<std::string>& errors) {
    std::string out;
    for (const auto& e : errors) out += e + "\n";
    return out;
}

}  // namespace

TEST_CASE("config: an empty file gives smtpscreen.ini(5)'s defaults") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    const Config& c = *l.config;
    CHECK(c.source_file == l.file);
    REQUIRE(c.listen_addresses.size() == 1);
    CHECK(c.listen_addresses[0].ip_port() == "127.0.0.1:2525");
    CHECK(c.proxy_protocol == ProxyProtocol::Off);
    REQUIRE(c.proxy_from.size() == 2);
    CHECK(c.proxy_from[0].to_string() == "127.0.0.0/8");
    CHECK(c.proxy_from[1].to_string() == "::1/128");
    CHECK(c.proxy_timeout == Millis(5000));
    CHECK(c.backend_address.ip_port() == "127.0.0.1:10025");
    CHECK(c.handoff == Handoff::ProxyV2);
    CHECK_FALSE(c.backend_source_address);
    CHECK(c.backend_idle_timeout == Millis(300000));
    CHECK(c.banner_template == "$hostname ESMTP");
    CHECK(c.banner.find("$hostname") == std::string::npos);
    CHECK(c.banner.size() > std::string(" ESMTP").size());
    CHECK(c.greet_wait == Millis(6000));
    CHECK(c.greet_action == Action::Enforce);
    CHECK(c.dnsbl_sites.empty());
    CHECK(c.dnsbl_threshold == 1);
    CHECK(c.dnsbl_allowlist_threshold == 0);
    CHECK(c.dnsbl_timeout == Millis(10000));
    CHECK(c.dnsbl_servers.empty());
    CHECK_FALSE(c.deep_tests_enabled());
    CHECK(c.deep_forbidden_commands == std::vector<std::string>{"CONNECT", "GET", "POST", "USER", "PASS"});
    CHECK(c.access_action == Action::Drop);
    CHECK(c.cache_backend == CacheBackend::Lmdb);
    CHECK(c.cache_path == "smtpscreen.cache");
    CHECK(c.cache_deep_ttl == Millis(30LL * 86400000));
    CHECK(c.tls_min_version == "1.2");
    CHECK(c.max_connections == 10000);
    CHECK(c.per_client_connections == 50);
    CHECK_FALSE(c.per_client_rate.on());
    CHECK_FALSE(c.per_network_rate.on());
    CHECK(c.network_prefix == NetworkPrefix{24, 64});
    CHECK(c.rate_table_size == 100000);
    CHECK(c.command_count_limit == 20);
    CHECK(c.shutdown_grace == Millis(30000));
    CHECK(c.smuggling_bare_lf == BareLf::Reject);
    CHECK(c.log_syslog);
    CHECK(c.log_syslog_name == "smtpscreen");
    CHECK_FALSE(c.log_stderr.has_value());
    CHECK(c.process_threads == 1);
    CHECK(c.tls_passthrough);
    CHECK(c.tls_before_backend);
    // The one warning of the defaults: without a certificate the backend's STARTTLS
    // passes through, and the smuggling defence inside it is the backend's.
    const auto warnings = config_warnings(c);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("tls.passthrough: on") != std::string::npos);
    CHECK(warnings[0].find("smtpd_forbid_bare_newline = reject") != std::string::npos);
    CHECK(warnings[0].find("tls.passthrough = off") != std::string::npos);
}

TEST_CASE("config: the tls.passthrough warning only where STARTTLS can pass through unseen") {
    TempDir dir("smtpscreen-config");
    auto warned = [&](const std::string& text) {
        auto l = load(dir, text);
        REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
        return all(config_warnings(*l.config)).find("tls.passthrough") != std::string::npos;
    };
    CHECK(warned(""));
    CHECK(warned("[backend]\nhandoff = proxy-v1\n"));
    CHECK_FALSE(warned("[tls]\npassthrough = off\n"));
    CHECK_FALSE(warned("[backend]\nhandoff = xclient\n"));   // STARTTLS is always hidden then
    CHECK_FALSE(warned("[backend]\ntls = on\n"));            // the backend's STARTTLS is ours
    auto cert = dir.write("c.pem", "x");
    CHECK_FALSE(warned("[tls]\ncert = " + cert + "\nkey = " + cert + "\n"));
    auto l = load(dir, "[tls]\npassthrough = off\n");
    CHECK_FALSE(l.config->tls_passthrough);
    CHECK_FALSE(load(dir, "[tls]\nbefore_backend = off\n").config->tls_before_backend);
    CHECK(load(dir, "[tls]\nbefore_backend = maybe\n").at(2, "tls.before_backend") != "");
    auto bad = load(dir, "[tls]\npassthrough = maybe\n");
    CHECK(bad.at(2, "tls.passthrough") != "");
}

TEST_CASE("config: a full file sets every kind of value") {
    TempDir dir("smtpscreen-config");
    auto access = dir.write("access.cidr", "192.0.2.0/24 permit\n2001:db8::/32 reject\n");
    auto map = dir.write("reply.map", "# public names\n\nZen.Spamhaus.Org.   zen.example\n");
    auto l = load(dir,
                  "; comment\n"
                  "[listen]\n"
                  "address = 0.0.0.0:25, [::]:25\n"
                  "proxy_protocol = v2\n"
                  "proxy_from = 10.0.0.0/8 , 2001:db8::/32\n"
                  "proxy_timeout = 3s\n"
                  "[backend]\n"
                  "address = [::1]:10025\n"
                  "handoff = xclient\n"
                  "source_address = ::1\n"
                  "idle_timeout = 10m\n"
                  "tls = yes\n"
                  "[greet]\n"
                  "banner = mx.example.net ESMTP ready\n"
                  "wait = 2500ms\n"
                  "action = DROP\n"
                  "[dnsbl]\n"
                  "sites = zen.spamhaus.org*3, list.dnswl.org=127.0.[0..255].[1..3]*-2\n"
                  "threshold = 3\n"
                  "allowlist_threshold = -1\n"
                  "servers = 192.0.2.53, [2001:db8::53]:5353\n"
                  "reply_map = " + map + "\n"
                  "[deep]\n"
                  "pipelining = on\n"
                  "forbidden_commands = connect, get\n"
                  "[access]\n"
                  "file = " + access + "\n"
                  "action = enforce\n"
                  "[cache]\n"
                  "backend = memory\n"
                  "dnsbl_min_ttl = 0\n"
                  "[limits]\n"
                  "max_connections = 500\n"
                  "[smuggling]\n"
                  "bare_lf = normalize\n"
                  "[log]\n"
                  "syslog = false\n"
                  "syslog_name = postfix/postscreen\n"
                  "stderr = on\n"
                  "[process]\n"
                  "threads = 4\n");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    const Config& c = *l.config;
    REQUIRE(c.listen_addresses.size() == 2);
    CHECK(c.listen_addresses[1].ip_port() == "[::]:25");
    CHECK(c.proxy_protocol == ProxyProtocol::V2);
    CHECK(c.proxy_from.size() == 2);
    CHECK(c.proxy_timeout == Millis(3000));
    CHECK(c.backend_address.ip_port() == "[::1]:10025");
    CHECK(c.handoff == Handoff::Xclient);
    REQUIRE(c.backend_source_address);
    CHECK(c.backend_source_address->ip() == "::1");
    CHECK(c.backend_idle_timeout == Millis(600000));
    CHECK(c.backend_tls);
    CHECK(c.banner == "mx.example.net ESMTP ready");
    CHECK(c.greet_wait == Millis(2500));
    CHECK(c.greet_action == Action::Drop);
    REQUIRE(c.dnsbl_sites.size() == 2);
    CHECK(c.dnsbl_sites[1].weight == -2);
    CHECK(c.dnsbl_threshold == 3);
    CHECK(c.dnsbl_allowlist_threshold == -1);
    REQUIRE(c.dnsbl_servers.size() == 2);
    CHECK(c.dnsbl_servers[0].ip_port() == "192.0.2.53:53");
    CHECK(c.dnsbl_servers[1].ip_port() == "[2001:db8::53]:5353");
    CHECK(c.dnsbl_reply_map == std::map<std::string, std::string>{{"zen.spamhaus.org", "zen.example"}});
    CHECK(c.deep_pipelining);
    CHECK(c.deep_forbidden_commands == std::vector<std::string>{"CONNECT", "GET"});
    CHECK(c.access_rules.size() == 2);
    CHECK(c.access_action == Action::Enforce);
    CHECK(c.cache_backend == CacheBackend::Memory);
    CHECK(c.cache_dnsbl_min_ttl == Millis(0));
    CHECK(c.max_connections == 500);
    CHECK(c.smuggling_bare_lf == BareLf::Normalize);
    CHECK_FALSE(c.log_syslog);
    CHECK(c.log_syslog_name == "postfix/postscreen");
    CHECK(c.log_stderr == true);
    CHECK(c.process_threads == 4);
}

TEST_CASE("config: $hostname in greet.banner expands to the host name") {
    TempDir dir("smtpscreen-config");
    char host[256] = "";
    REQUIRE(gethostname(host, sizeof host - 1) == 0);
    auto l = load(dir, "[greet]\nbanner = $hostname ESMTP (${hostname})\n");
    REQUIRE(l.errors.empty());
    CHECK(l.config->banner == std::string(host) + " ESMTP (" + host + ")");
    CHECK(l.config->banner_template == "$hostname ESMTP (${hostname})");
}

TEST_CASE("config: greet.hostname is the name in the banner's $hostname; empty is the host's name") {
    TempDir dir;
    char host[256] = "";
    REQUIRE(gethostname(host, sizeof host - 1) == 0);
    auto l = load(dir, "[greet]\nbanner = ${hostname} ESMTP\nhostname = mx1.example-mail.org\n");
    REQUIRE(l.errors.empty());
    CHECK(l.config->greet_hostname == "mx1.example-mail.org");
    CHECK(l.config->hostname == "mx1.example-mail.org");
    CHECK(l.config->banner == "mx1.example-mail.org ESMTP");
    CHECK(print_config(*l.config).find("hostname = mx1.example-mail.org\n") != std::string::npos);

    auto unset = load(dir, "[greet]\nhostname =\n");
    REQUIRE(unset.errors.empty());
    CHECK(unset.config->greet_hostname.empty());
    CHECK(unset.config->hostname == host);
    CHECK(unset.config->banner == std::string(host) + " ESMTP");
}

TEST_CASE("config: a greet.hostname that is no host name is refused") {
    TempDir dir;
    for (const char* bad : {"mx example.org", "mx..example.org", "-mx.example.org", "mx.example.org.", "mx_1.example",
                            "[192.0.2.1]"}) {
        auto l = load(dir, std::string("[greet]\nhostname = ") + bad + "\n");
        REQUIRE_MESSAGE(l.errors.size() == 1, bad);
        CHECK_MESSAGE(l.at(2, "greet.hostname").find("is not a host name") != std::string::npos, bad);
    }
}

TEST_CASE("config: a bad duration names file, line and key, and what to write") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[greet]\n\nwait = 6x\n");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.errors[0] == l.file + ":3: greet.wait: \"6x\" is not a duration (use 6s, 2m, 1h)");
}

TEST_CASE("config: zero is refused for timeouts but allowed for TTLs and the shutdown grace") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[backend]\nconnect_timeout = 0\n[cache]\ndeep_ttl = 0s\n[limits]\nshutdown_grace = 0\n");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.at(2, "backend.connect_timeout").find("zero") != std::string::npos);
}

TEST_CASE("config: bad booleans, enums and actions") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[deep]\n"
                  "pipelining = maybe\n"
                  "action = reject\n"
                  "[listen]\n"
                  "proxy_protocol = v3\n"
                  "[backend]\n"
                  "handoff = smtp\n"
                  "[cache]\n"
                  "backend = sqlite\n"
                  "[smuggling]\n"
                  "bare_lf = strip\n"
                  "[log]\n"
                  "stderr = sometimes\n");
    CHECK(l.errors.size() == 7);
    CHECK(l.at(2, "deep.pipelining").find("(use on, off, yes, no, true or false)") != std::string::npos);
    CHECK(l.at(3, "deep.action").find("\"reject\" is not an action (use ignore, enforce, drop or tarpit)") !=
          std::string::npos);
    CHECK(l.at(5, "listen.proxy_protocol").find("(use off, v1, v2 or auto)") != std::string::npos);
    CHECK(l.at(7, "backend.handoff").find("(use proxy-v2, proxy-v1, xclient or none)") != std::string::npos);
    CHECK(l.at(9, "cache.backend").find("(use lmdb, redis or memory)") != std::string::npos);
    CHECK(l.at(11, "smuggling.bare_lf").find("(use reject or normalize)") != std::string::npos);
    CHECK(l.at(13, "log.stderr").find("auto") != std::string::npos);
}

TEST_CASE("config: integers must be whole and within range") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[process]\n"
                  "threads = 65\n"
                  "[limits]\n"
                  "max_connections = lots\n"
                  "per_client_connections = 0\n"
                  "command_count_limit = 99999999999999999999\n"
                  "[dnsbl]\n"
                  "threshold = 0\n"
                  "allowlist_threshold = 2\n");
    CHECK(l.errors.size() == 6);
    CHECK(l.at(2, "process.threads").find("(use a whole number from 1 to 64)") != std::string::npos);
    CHECK(l.at(4, "limits.max_connections").find("is not a whole number") != std::string::npos);
    CHECK(l.at(5, "limits.per_client_connections").find("out of range") != std::string::npos);
    CHECK_FALSE(l.at(6, "limits.command_count_limit").empty());
    CHECK_FALSE(l.at(8, "dnsbl.threshold").empty());
    CHECK(l.at(9, "dnsbl.allowlist_threshold").find("negative") != std::string::npos);
}

TEST_CASE("config: the auto-ban's keys, ban.action drop or tarpit") {
    TempDir dir("smtpscreen-config");
    auto defaults = load(dir, "[ban]\n");
    REQUIRE_MESSAGE(defaults.errors.empty(), all(defaults.errors));
    CHECK_FALSE(defaults.config->ban_rules().on());
    CHECK(defaults.config->ban_time == Millis(3600000));
    CHECK(defaults.config->ban_max_time == Millis(7 * 86400000LL));
    CHECK(defaults.config->ban_action == BanAction::Drop);
    auto ok = load(dir, "[ban]\nafter = 3/10m\ntime = 10m\nmax_time = 1d\naction = drop\n"
                        "[limits]\nrate_table_size = 500\n");
    REQUIRE_MESSAGE(ok.errors.empty(), all(ok.errors));
    const BanRules r = ok.config->ban_rules();
    CHECK(r.on());
    CHECK(r.after == RateLimit{3, Millis(600000)});
    CHECK(r.time == Millis(600000));
    CHECK(r.max_time == Millis(86400000));
    CHECK(r.table_size == 500);

    auto l = load(dir, "[ban]\nafter = 0/1m\ntime = 0\nmax_time = x\naction = tarpit\n");
    CHECK(l.at(2, "ban.after").find("counts to 0 (use N/PERIOD, e.g. 30/1m for 30 failures a minute") !=
          std::string::npos);
    CHECK_FALSE(l.at(3, "ban.time").empty());
    CHECK_FALSE(l.at(4, "ban.max_time").empty());
    CHECK(l.at(5, "ban.action").empty());
    CHECK(load(dir, "[ban]\naction = tarpit\n").config->ban_action == BanAction::Tarpit);
    auto wrong = load(dir, "[ban]\naction = stall\nafter = 3\n");
    CHECK(wrong.at(2, "ban.action").find("(use drop or tarpit)") != std::string::npos);
    CHECK(wrong.at(3, "ban.after").find("is not a rate") != std::string::npos);
}

TEST_CASE("config: the rate limits, their network and table size") {
    TempDir dir("smtpscreen-config");
    auto ok = load(dir, "[limits]\nper_client_rate = 30/1m\nper_network_rate = 200/5m\nnetwork_prefix = 20, 56\n"
                        "rate_table_size = 1000\n");
    REQUIRE_MESSAGE(ok.errors.empty(), all(ok.errors));
    CHECK(ok.config->per_client_rate == RateLimit{30, Millis(60000)});
    CHECK(ok.config->per_network_rate == RateLimit{200, Millis(300000)});
    CHECK(ok.config->network_prefix == NetworkPrefix{20, 56});
    CHECK(ok.config->rate_table_size == 1000);
    CHECK(ok.config->rate_rules().on());
    auto off = load(dir, "[limits]\nper_client_rate = 0\nper_network_rate = 0\n");
    REQUIRE_MESSAGE(off.errors.empty(), all(off.errors));
    CHECK_FALSE(off.config->rate_rules().on());

    auto l = load(dir, "[limits]\nper_client_rate = 30\nper_network_rate = 0/1m\nnetwork_prefix = 24\n"
                       "rate_table_size = 0\n");
    CHECK(l.at(2, "limits.per_client_rate").find("\"30\" is not a rate (use N/PERIOD, e.g. 30/1m") !=
          std::string::npos);
    CHECK(l.at(3, "limits.per_network_rate").find("allows no connection at all (use N/PERIOD") != std::string::npos);
    CHECK(l.at(4, "limits.network_prefix").find("is not two prefix lengths (use the IPv4 one from 1 to 32, then "
                                                "the IPv6 one from 1 to 128, e.g. 24, 64)") != std::string::npos);
    CHECK_FALSE(l.at(5, "limits.rate_table_size").empty());
    for (const char* bad : {"33, 64", "24, 129", "0, 64", "24, x", "24, 64, 8", "24 64"}) {
        CAPTURE(bad);
        auto b = load(dir, std::string("[limits]\nnetwork_prefix = ") + bad + "\n");
        CHECK_FALSE(b.at(2, "limits.network_prefix").empty());
    }
}

TEST_CASE("config: addresses, ports and CIDR lists") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[listen]\n"
                  "address = 127.0.0.1\n"
                  "proxy_from = 10.0.0.0/33, 192.0.2.1/24\n"
                  "[backend]\n"
                  "address = 127.0.0.1:0\n"
                  "source_address = 127.0.0.25:25\n"
                  "[dnsbl]\n"
                  "servers = 192.0.2.53, dns.example\n");
    CHECK(l.errors.size() == 6);
    CHECK(l.at(2, "listen.address").find("is not an ip:port") != std::string::npos);
    CHECK(l.at(3, "listen.proxy_from").find("prefix length") != std::string::npos);
    CHECK(l.has(l.file + ":3: listen.proxy_from: \"192.0.2.1/24\" has address bits set beyond the prefix (use 192.0.2.0/24)"));
    CHECK(l.at(5, "backend.address").find("port 0") != std::string::npos);
    CHECK(l.at(6, "backend.source_address").find("without a port") != std::string::npos);
    CHECK(l.at(8, "dnsbl.servers").find("\"dns.example\"") != std::string::npos);
}

TEST_CASE("config: listen.address may not be empty or list an address twice") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[listen]\naddress =\n");
    CHECK(l.at(2, "listen.address").find("empty") != std::string::npos);
    auto d = load(dir, "[listen]\naddress = 127.0.0.1:25, 127.0.0.1:25\n");
    CHECK(d.at(2, "listen.address").find("twice") != std::string::npos);
}

TEST_CASE("config: stats.listen is an ip:port of its own, empty for none") {
    TempDir dir;
    CHECK_FALSE(Config{}.stats_listen.has_value());
    auto ok = load(dir, "[stats]\nlisten = 127.0.0.1:9425\n");
    CHECK(ok.errors.empty());
    REQUIRE(ok.config->stats_listen.has_value());
    CHECK(ok.config->stats_listen->ip_port() == "127.0.0.1:9425");
    CHECK(print_config(*ok.config).find("[stats]\nlisten = 127.0.0.1:9425\n") != std::string::npos);
    auto v6 = load(dir, "[stats]\nlisten = [::1]:9425\n");
    CHECK(v6.errors.empty());
    auto none = load(dir, "[stats]\nlisten =\n");
    CHECK(none.errors.empty());
    CHECK_FALSE(none.config->stats_listen.has_value());
    auto no_port = load(dir, "[stats]\nlisten = 127.0.0.1\n");
    CHECK_FALSE(no_port.at(2, "stats.listen").empty());
    // One of the SMTP addresses: refused, naming both keys.
    auto same = load(dir, "[listen]\naddress = 127.0.0.1:2500, 127.0.0.1:2501\n[stats]\nlisten = 127.0.0.1:2501\n");
    CHECK(same.at(4, "stats.listen").find("also in listen.address") != std::string::npos);
}

TEST_CASE("config: dnsbl.sites syntax errors carry file, line and key") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[dnsbl]\nsites = zen.spamhaus.org*x, bl.example=127.0.0.[9..2]\n");
    CHECK(l.errors.size() == 2);
    CHECK(l.at(2, "dnsbl.sites").find("zen.spamhaus.org*x") != std::string::npos);
    CHECK(l.has(l.file + ":2: dnsbl.sites: DNSBL site \"bl.example=127.0.0.[9..2]\""));
}

TEST_CASE("config: unknown sections and keys, with a hint") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[greet]\n"
                  "wiat = 6s\n"
                  "[postscreen]\n"
                  "greet_wait = 6s\n"
                  "more = 1\n"
                  "[dnsbl]\n"
                  "threshhold = 2\n"
                  "wait = 6s\n"
                  "colour = blue\n");
    CHECK(l.errors.size() == 5);  // one for the section, none for its keys
    CHECK(l.at(2, "greet.wiat").find("unknown key (did you mean greet.wait?)") != std::string::npos);
    CHECK(l.has(l.file + ":3: [postscreen]: unknown section (use one of [listen], [backend], [greet]"));
    CHECK(l.at(7, "dnsbl.threshhold").find("did you mean dnsbl.threshold?") != std::string::npos);
    CHECK(l.at(8, "dnsbl.wait").find("did you mean greet.wait?") != std::string::npos);
    CHECK(l.at(9, "dnsbl.colour").find("the keys of [dnsbl] are sites, threshold") != std::string::npos);
}

TEST_CASE("config: a key set twice is an error on the second line, naming the first") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[greet]\nwait = 6s\naction = drop\n[greet]\nwait = 2s\n");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.errors[0] == l.file + ":5: greet.wait: is set twice, first on line 2 (keep one)");
}

TEST_CASE("config: malformed lines are all reported, with their line numbers") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "threads = 2\n"
                  "[process\n"
                  "[greet]\n"
                  "wait 6s\n"
                  "action: drop\n"
                  "= 6s\n"
                  "[log] syslog = off\n");
    CHECK(l.errors.size() == 6);
    CHECK(l.at(1, "threads").find("outside any section") != std::string::npos);
    CHECK(l.has(l.file + ":2: \"[process\" is an unterminated section header (use [name])"));
    CHECK(l.has(l.file + ":4: \"wait 6s\" is not a setting (use key = value)"));
    CHECK(l.has(l.file + ":5: \"action: drop\" is not a setting (use key = value)"));
    CHECK(l.has(l.file + ":6: \"= 6s\" has no key name"));
    CHECK(l.has(l.file + ":7: text after the section header"));
}

TEST_CASE("config: errors come in file order, every one of them") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[process]\n"
                  "threads = 0\n"
                  "[listen]\n"
                  "proxy_timeout = soon\n"
                  "[greet]\n"
                  "wait = later\n");
    REQUIRE(l.errors.size() == 3);
    CHECK(l.errors[0].find(":2: process.threads") != std::string::npos);
    CHECK(l.errors[1].find(":4: listen.proxy_timeout") != std::string::npos);
    CHECK(l.errors[2].find(":6: greet.wait") != std::string::npos);
}

TEST_CASE("config: a line too long for the INI reader is refused, not split") {
    TempDir dir("smtpscreen-config");
    std::string sites(250, 'a');
    auto l = load(dir, "[dnsbl]\nsites = " + sites + ".example\n");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.errors[0].rfind(l.file + ":2: line is longer than", 0) == 0);
}

TEST_CASE("config: indented continuation lines extend a value; indented keys stay keys") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[dnsbl]\n"
                  "sites = zen.spamhaus.org=127.0.0.[2..11]*3,\n"
                  "        list.dnswl.org=127.0.[0..255].[1..3]*-2\n"
                  "    threshold = 3\n"
                  "\n"
                  "  [greet]\n"
                  "  wait = 2s ; inline comment\n");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    CHECK(l.config->dnsbl_sites.size() == 2);
    CHECK(l.config->dnsbl_threshold == 3);
    CHECK(l.config->greet_wait == Millis(2000));
}

TEST_CASE("config: the config file itself missing") {
    TempDir dir("smtpscreen-config");
    std::vector<std::string> errors;
    auto path = dir.path("nope.ini");
    auto c = load_config(path, errors);
    REQUIRE(c != nullptr);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].rfind(path + ": cannot read the configuration: No such file or directory", 0) == 0);
}

TEST_CASE("config: missing or unreadable files named by keys") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[access]\n"
                  "file = " + dir.path("missing.cidr") + "\n"
                  "[dnsbl]\n"
                  "reply_map = " + dir.path("missing.map") + "\n"
                  "[tls]\n"
                  "cert = " + dir.path("missing.crt") + "\n"
                  "key = " + dir.path("missing.key") + "\n"
                  "[backend]\n"
                  "tls_ca = " + dir.path("") + "\n");
    CHECK(l.errors.size() == 5);
    CHECK(l.at(2, "access.file").find("cannot read \"" + dir.path("missing.cidr") + "\": No such file") !=
          std::string::npos);
    CHECK_FALSE(l.at(4, "dnsbl.reply_map").empty());
    CHECK_FALSE(l.at(6, "tls.cert").empty());
    CHECK_FALSE(l.at(7, "tls.key").empty());
    CHECK(l.at(9, "backend.tls_ca").find("directory") != std::string::npos);
}

TEST_CASE("config: tls.cert and tls.key go together; readable files pass") {
    TempDir dir("smtpscreen-config");
    auto crt = dir.write("server.crt", "-----BEGIN CERTIFICATE-----\n");
    auto key = dir.write("server.key", "-----BEGIN PRIVATE KEY-----\n");
    auto alone = load(dir, "[tls]\ncert = " + crt + "\n");
    REQUIRE(alone.errors.size() == 1);
    CHECK(alone.at(2, "tls.cert").find("tls.key is not") != std::string::npos);
    auto both = load(dir, "[tls]\ncert = " + crt + "\nkey = " + key + "\n");
    CHECK_MESSAGE(both.errors.empty(), all(both.errors));
    CHECK(both.config->tls_key == std::vector<std::string>{key});
}

TEST_CASE("config: tls.min_version only 1.2") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[tls]\nmin_version = 1.3\n");
    CHECK(l.at(2, "tls.min_version").find("use 1.2") != std::string::npos);
}

TEST_CASE("config: cache.dnsbl_min_ttl may not exceed cache.dnsbl_max_ttl") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[cache]\ndnsbl_max_ttl = 30s\ndnsbl_min_ttl = 2m\n");
    REQUIRE(l.errors.size() == 1);
    CHECK(l.at(3, "cache.dnsbl_min_ttl").find("longer than dnsbl_max_ttl") != std::string::npos);
    auto equal = load(dir, "[cache]\ndnsbl_max_ttl = 60s\ndnsbl_min_ttl = 1m\n");
    CHECK(equal.errors.empty());
}

TEST_CASE("config: proxy_protocol with nobody allowed to send it") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[listen]\nproxy_protocol = auto\nproxy_from =\n");
    CHECK(l.at(3, "listen.proxy_from").find("every connection would be closed") != std::string::npos);
    auto off = load(dir, "[listen]\nproxy_from =\n");
    CHECK(off.errors.empty());
}

TEST_CASE("config: handoff = none is refused, explaining the open relay") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[backend]\nhandoff = none\n");
    REQUIRE(l.errors.size() == 1);
    std::string e = l.at(2, "backend.handoff");
    CHECK(e.find("127.0.0.1") != std::string::npos);
    CHECK(e.find("open relay") != std::string::npos);
    CHECK(e.find("i_know_this_is_an_open_relay = yes") != std::string::npos);
}

TEST_CASE("config: handoff = none with the override starts, with a warning") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[backend]\nhandoff = none\ni_know_this_is_an_open_relay = yes\n");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    CHECK(l.config->handoff == Handoff::None);
    auto warnings = config_warnings(*l.config);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("backend.handoff") != std::string::npos);
    CHECK(warnings[0].find("open relay") != std::string::npos);
}

TEST_CASE("config: other warnings that do not stop the start") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir,
                  "[dnsbl]\nsites = bl.example*1\nthreshold = 2\nallowlist_threshold = -1\n"
                  "[limits]\nmax_connections = 10\nper_client_connections = 20\n"
                  "[tls]\npassthrough = off\n");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    auto warnings = config_warnings(*l.config);
    CHECK(warnings.size() == 3);
    CHECK(all(warnings).find("no client can fail the DNSBL test") != std::string::npos);
    CHECK(all(warnings).find("no dnsbl.sites entry has a negative weight") != std::string::npos);
    CHECK(all(warnings).find("limits.per_client_connections") != std::string::npos);
}

TEST_CASE("config: access.file is loaded into access_rules, its errors located in it") {
    TempDir dir("smtpscreen-config");
    auto good = dir.write("good.cidr", "# allow the office\n192.0.2.0/24 permit\n0.0.0.0/0 reject\n");
    auto l = load(dir, "[access]\nfile = " + good + "\n");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    REQUIRE(l.config->access_rules.size() == 2);
    CHECK(l.config->access_rules[0].verdict == AccessVerdict::Permit);
    CHECK(l.config->access_file == good);

    auto bad = dir.write("bad.cidr", "192.0.2.0/24 permit\n192.0.2.0/24 perhaps\n");
    auto b = load(dir, "[access]\nfile = " + bad + "\n");
    REQUIRE(b.errors.size() == 1);
    CHECK(b.errors[0] == bad + ":2: access.file: \"perhaps\" is not an action (use permit or reject)");
}

TEST_CASE("config: dnsbl.reply_map problems are located in the map file") {
    TempDir dir("smtpscreen-config");
    auto map = dir.write("reply.map", "zen.spamhaus.org zen\nbl.example\nzen.spamhaus.org. other\n");
    auto l = load(dir, "[dnsbl]\nreply_map = " + map + "\n");
    REQUIRE(l.errors.size() == 2);
    CHECK(l.errors[0].rfind(map + ":2: dnsbl.reply_map: \"bl.example\" has no public name", 0) == 0);
    CHECK(l.errors[1].rfind(map + ":3: dnsbl.reply_map: zone \"zen.spamhaus.org\" is listed twice", 0) == 0);
}

TEST_CASE("config: process.user must exist") {
    TempDir dir("smtpscreen-config");
    auto l = load(dir, "[process]\nuser = no-such-user-smtpscreen\n");
    CHECK(l.at(2, "process.user").find("is not a user") != std::string::npos);
    auto root = load(dir, "[process]\nuser = root\n");
    CHECK(root.errors.empty());
}

TEST_CASE("print_config lists every section and key in the man page's order") {
    Config c;
    std::string text = print_config(c);
    std::vector<std::string> order = {"[listen]", "[backend]", "[greet]", "[dnsbl]", "[deep]", "[access]",
                                      "[cache]", "[tls]", "[limits]", "[tarpit]", "[greylist]", "[smuggling]", "[log]",
                                      "[stats]", "[process]"};
    size_t pos = 0;
    for (const auto& s : order) {
        CAPTURE(s);
        size_t at = text.find(s, pos);
        CHECK(at != std::string::npos);
        pos = at;
    }
    for (const char* line : {"address = 127.0.0.1:2525\n", "proxy_from = 127.0.0.0/8, ::1/128\n",
                             "source_address =\n", "i_know_this_is_an_open_relay = no\n",
                             "banner = $hostname ESMTP\n", "wait = 6s\n", "sites =\n",
                             "forbidden_commands = CONNECT, GET, POST, USER, PASS\n", "deep_ttl = 30d\n",
                             "min_version = 1.2\n", "stderr = auto\n", "threads = 1\n", "bare_lf = reject\n"}) {
        CAPTURE(line);
        CHECK(text.find(line) != std::string::npos);
    }
    size_t keys = 0;
    for (size_t i = text.find(" ="); i != std::string::npos; i = text.find(" =", i + 1)) ++keys;
    CHECK(keys == 82);
}

TEST_CASE("print_config round trip: defaults") {
    TempDir dir("smtpscreen-config");
    Config defaults;
    auto l = load(dir, print_config(defaults));
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    CHECK(print_config(*l.config) == print_config(defaults));
}

TEST_CASE("print_config round trip: a config far from the defaults, long lists wrapped") {
    TempDir dir("smtpscreen-config");
    auto access = dir.write("access.cidr", "192.0.2.0/24 permit\n");
    auto map = dir.write("reply.map", "zen.spamhaus.org zen\n");
    auto crt = dir.write("c.pem", "x");
    auto key = dir.write("k.pem", "x");
    std::string sites =
        "zen.spamhaus.org=127.0.0.[2..11]*3,\n"
        "  b.barracudacentral.org=127.0.0.2*2, bl.mailspike.net=127.0.0.[2;10;11;12]*2,\n"
        "  list.dnswl.org=127.0.[0..255].[1..3]*-2, swl.spamhaus.org*-4, bl.spamcop.net*1,\n"
        "  psbl.surriel.com*1";
    auto first = load(dir,
                      "[listen]\naddress = 0.0.0.0:25, [::]:25, 192.0.2.1:2525, [2001:db8::1]:2525\n"
                      "proxy_protocol = v1\nproxy_from = 10.0.0.0/8, 2001:db8::/32\nproxy_timeout = 1500ms\n"
                      "[backend]\naddress = 127.0.0.1:10026\nhandoff = none\nsource_address = 127.0.0.25\n"
                      "i_know_this_is_an_open_relay = yes\ntls = on\ntls_ca = " + crt + "\n"
                      "[greet]\nbanner = ${hostname} ESMTP hello\nwait = 3s\naction = ignore\n"
                      "[dnsbl]\nsites = " + sites + "\nthreshold = 2\nallowlist_threshold = -1\n"
                      "action = drop\ntimeout = 4s\nservers = 192.0.2.53:5353, ::1\nreply_map = " + map + "\n"
                      "[deep]\npipelining = on\nnon_smtp_command = on\nbare_newline = on\naction = drop\n"
                      "forbidden_commands =\n"
                      "[access]\nfile = " + access + "\naction = ignore\n"
                      "[cache]\nbackend = memory\npath = /var/tmp/x.lmdb\nredis = [::1]:6380\n"
                      "redis_timeout = 50ms\nredis_password = pass word\nredis_db = 7\nredis_prefix = mx1/\n"
                      "pregreet_ttl = 2h\ndnsbl_min_ttl = 0\ndnsbl_max_ttl = 2d\ndeep_ttl = 1w\n"
                      "[tls]\ncert = " + crt + "\nkey = " + key + "\nciphers = TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384\n"
                      "handshake_timeout = 10s\n"
                      "[limits]\nmax_connections = 100\nper_client_connections = 5\ncommand_time_limit = 1m\n"
                      "command_count_limit = 7\nshutdown_grace = 0\nper_client_rate = 30/60s\n"
                      "per_network_rate = 1000/1h\nnetwork_prefix = 16, 48\nrate_table_size = 5000\n"
                      "[ban]\nafter = 5/10m\ntime = 30m\nmax_time = 2d\naction = drop\n"
                      "[greylist]\nenable = on\ndelay = 90s\nretry_window = 12h\nttl = 7d\ntable_size = 2000\n"
                      "[smuggling]\nbare_lf = normalize\n"
                      "[log]\nsyslog = off\nsyslog_name = postfix/postscreen\nstderr = off\n"
                      "[process]\nuser = root\nthreads = 64\n");
    REQUIRE_MESSAGE(first.errors.empty(), all(first.errors));
    std::string printed = print_config(*first.config);
    for (size_t start = 0, nl; (nl = printed.find('\n', start)) != std::string::npos; start = nl + 1) {
        CHECK(nl - start <= 197);  // short enough for the INI reader
    }
    CHECK(printed.find("\n    ") != std::string::npos);  // the long sites list was wrapped
    auto second = load(dir, printed);
    REQUIRE_MESSAGE(second.errors.empty(), (all(second.errors) + printed));
    const Config& a = *first.config;
    const Config& b = *second.config;
    CHECK(b.dnsbl_sites.size() == 7);
    CHECK(b.dnsbl_sites == a.dnsbl_sites);
    CHECK(b.access_rules.size() == 1);
    CHECK(b.dnsbl_reply_map == a.dnsbl_reply_map);
    CHECK(b.deep_forbidden_commands.empty());
    CHECK(b.log_stderr == false);
    CHECK(b.banner == a.banner);
    CHECK(b.greylist_enable);
    CHECK(b.greylist_delay == Millis(90000));
    CHECK(b.greylist_retry_window == Millis(12LL * 3600000));
    CHECK(b.greylist_ttl == Millis(7LL * 86400000));
    CHECK(b.greylist_table_size == 2000);
    // Everything else compares through the printed form; only the source file differs.
    CHECK(print_config(b) == printed);
}

// Loads `text`, prints it, loads the print: no errors, an equal Config, the same print,
// and no printed line longer than the reader takes.
void check_round_trip(const TempDir& dir, const std::string& text) {
    auto first = load(dir, text);
    REQUIRE_MESSAGE(first.errors.empty(), all(first.errors));
    std::string printed = print_config(*first.config);
    for (size_t start = 0, nl; (nl = printed.find('\n', start)) != std::string::npos; start = nl + 1) {
        CHECK(nl - start <= kIniMaxLine);
    }
    auto second = load(dir, printed);
    REQUIRE_MESSAGE(second.errors.empty(), (all(second.errors) + printed));
    CHECK(*second.config == *first.config);
    CHECK(print_config(*second.config) == printed);
}

TEST_CASE("print_config round trip: lines as long as the reader takes, where the readable form does not fit") {
    TempDir dir("smtpscreen-config");
    // fuzz_config's find (corpus/config/crash-config-print-long-continuation): a
    // continuation line of 198 characters, which four spaces of indent would overflow.
    check_round_trip(dir, "[greet]\nbanner = $hostname\n " + std::string(197, '\xff') + "\n");
    // One word after "key=" filling the line: printed without the spaces around "=".
    check_round_trip(dir, "[greet]\nbanner=" + std::string(191, 'x') + "\n");
    // A value that starts on a continuation line.
    check_round_trip(dir, "[tls]\nciphers =\n\t" + std::string(197, 'c') + "\n d\n");
    // Words that read as a key at a line's start stay after another word.
    check_round_trip(dir, "[tls]\nciphers = " + std::string(150, 'c') + " key=x\n " + std::string(150, 'c') +
                              " min_version=1.2\n");
}

TEST_CASE("config: a value --print-config could not write back is refused, naming its line") {
    TempDir dir("smtpscreen-config");
    // The vertical tab hides "path=b" from the continuation rule (it trims spaces and
    // tabs) but not from the INI reader (it trims isspace()): joined, the value has no
    // line of its own where "path=b" does not read as the key cache.path.
    auto l = load(dir, "[cache]\npath =\n " + std::string(196, 'a') + "\n \vpath=b\n");
    REQUIRE_MESSAGE(l.errors.size() == 1, all(l.errors));
    CHECK(l.at(2, "cache.path").find("cannot write back on lines of at most 198 characters") != std::string::npos);
}

TEST_CASE("the shipped conf/smtpscreen.ini loads cleanly and sets every key") {
    // Meson compiles with paths relative to the build directory, and tests may run
    // from there or from the source root.
    std::filesystem::path here = std::filesystem::path(__FILE__).parent_path();
    std::string shipped;
    for (auto candidate : {here / "../../conf/smtpscreen.ini", std::filesystem::path("conf/smtpscreen.ini"),
                           std::filesystem::path("../conf/smtpscreen.ini")}) {
        if (std::filesystem::exists(candidate)) {
            shipped = candidate.string();
            break;
        }
    }
    REQUIRE_MESSAGE(!shipped.empty(), "conf/smtpscreen.ini not found from " << std::filesystem::current_path());
    std::vector<std::string> errors;
    auto c = load_config(shipped, errors);
    REQUIRE_MESSAGE(errors.empty(), all(errors));
    // Shipped without a certificate: only the tls.passthrough warning.
    const auto warnings = config_warnings(*c);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("tls.passthrough") != std::string::npos);
    CHECK(c->listen_addresses.at(0).ip_port() == "127.0.0.1:2525");
    CHECK(c->backend_address.ip_port() == "127.0.0.1:10025");
    CHECK(c->handoff == Handoff::ProxyV2);
    CHECK(c->cache_backend == CacheBackend::Lmdb);
    CHECK(c->log_syslog);

    std::ifstream in(shipped);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string printed = print_config(Config{});
    size_t keys = 0;
    for (size_t start = 0, nl; (nl = printed.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string line = printed.substr(start, nl - start);
        size_t eq = line.find(" =");
        if (eq == std::string::npos || line.front() == '#') continue;
        ++keys;
        std::string key = "\n" + line.substr(0, eq) + " =";
        CAPTURE(key);
        CHECK(text.find(key) != std::string::npos);
    }
    CHECK(keys == 82);
}

TEST_CASE("config: backend.tls_name, a host name or an IP address; empty means backend.address's") {
    TempDir dir;
    auto l = load(dir, "[backend]\naddress = 192.0.2.25:10025\n");
    REQUIRE_MESSAGE(l.errors.empty(), all(l.errors));
    CHECK(l.config->backend_tls_name.empty());
    CHECK(l.config->backend_certificate_name() == "192.0.2.25");
    for (const char* name : {"mx.example.org", "MX-1.example.org", "192.0.2.26", "2001:db8::25"}) {
        auto named = load(dir, std::string("[backend]\ntls_name = ") + name + "\n");
        REQUIRE_MESSAGE(named.errors.empty(), all(named.errors));
        CHECK(named.config->backend_certificate_name() == name);
    }
    for (const char* bad : {"*.example.org", "mx example.org", "mx_1.example.org", ".example.org", "[::1]"}) {
        auto refused = load(dir, std::string("[backend]\ntls_name = ") + bad + "\n");
        CHECK_MESSAGE(refused.at(2, "backend.tls_name").find("neither a host name nor an IP address") !=
                          std::string::npos,
                      bad);
    }
}

TEST_CASE("config: the cache.redis keys") {
    TempDir dir("smtpscreen-config");
    auto defaults = load(dir, "");
    const RedisSettings d = defaults.config->redis_settings();
    CHECK(d.address == "127.0.0.1:6379");
    CHECK(d.timeout == Millis(200));
    CHECK(d.password.empty());
    CHECK(d.db == 0);
    CHECK(d.prefix == "smtpscreen:");

    auto tcp = load(dir, "[cache]\nbackend = redis\nredis = 192.0.2.6:6380\nredis_timeout = 1s\n"
                         "redis_password = s3cret\nredis_db = 2\nredis_prefix = mx:\n");
    REQUIRE_MESSAGE(tcp.errors.empty(), all(tcp.errors));
    CHECK(tcp.config->cache_backend == CacheBackend::Redis);
    const RedisSettings t = tcp.config->redis_settings();
    CHECK_FALSE(t.unix_socket());
    CHECK(t.host() == "192.0.2.6");
    CHECK(t.port() == 6380);
    CHECK(t.timeout == Millis(1000));
    CHECK(t.password == "s3cret");
    CHECK(t.db == 2);
    CHECK(t.prefix == "mx:");

    auto v6 = load(dir, "[cache]\nredis = [2001:db8::1]:6379\n");
    REQUIRE_MESSAGE(v6.errors.empty(), all(v6.errors));
    CHECK(v6.config->redis_settings().host() == "2001:db8::1");
    auto unix_socket = load(dir, "[cache]\nredis = /run/redis/redis-server.sock\n");
    REQUIRE_MESSAGE(unix_socket.errors.empty(), all(unix_socket.errors));
    CHECK(unix_socket.config->redis_settings().unix_socket());

    // A host name is resolved as the configuration is loaded; the logs keep the name.
    auto named = load(dir, "[cache]\nredis = localhost:6380\n");
    REQUIRE_MESSAGE(named.errors.empty(), all(named.errors));
    const RedisSettings n = named.config->redis_settings();
    CHECK(n.address == "localhost:6380");
    CHECK((n.host() == "127.0.0.1" || n.host() == "::1"));
    CHECK(n.port() == 6380);
    CHECK_FALSE(n.unix_socket());
    CHECK(named.config->cache_redis == "localhost:6380");
    auto unknown = load(dir, "[cache]\nredis = no-such-host.invalid:6379\n");
    REQUIRE(unknown.errors.size() == 1);
    CHECK(unknown.at(2, "cache.redis").find("the host name no-such-host.invalid does not resolve") !=
          std::string::npos);
    CHECK(unknown.at(2, "cache.redis").find("give Redis's IP address") != std::string::npos);
    for (const char* wrong : {"localhost", "localhost:", "localhost:0", "localhost:70000", ":6379", "a:b:6379"}) {
        auto r = load(dir, std::string("[cache]\nredis = ") + wrong + "\n");
        REQUIRE_MESSAGE(r.errors.size() == 1, wrong);
        CHECK_MESSAGE(r.at(2, "cache.redis").find("is not a host:port") != std::string::npos, wrong);
    }

    auto bad = load(dir, "[cache]\nredis = 192.0.2.1:http\nredis_timeout = 0\nredis_db = -1\n"
                         "redis_prefix =\n");
    CHECK(bad.errors.size() == 4);
    CHECK(bad.at(2, "cache.redis").find("is not a host:port or a unix socket path") != std::string::npos);
    CHECK(bad.at(3, "cache.redis_timeout") != "");
    CHECK(bad.at(4, "cache.redis_db") != "");
    CHECK(bad.at(5, "cache.redis_prefix").find("e.g. smtpscreen:") != std::string::npos);
    auto long_path = load(dir, "[cache]\nredis = /" + std::string(120, 'r') + "\n");
    CHECK(long_path.at(2, "cache.redis").find("longer than a unix socket path") != std::string::npos);
}

TEST_CASE("config: greylist.enable needs a deep test; the retry window must be longer than the delay") {
    TempDir dir;
    auto alone = load(dir, "[greylist]\nenable = on\n");
    REQUIRE(alone.errors.size() == 1);
    CHECK(alone.at(2, "greylist.enable").find("no deep test is") != std::string::npos);
    CHECK(load(dir, "[deep]\nbare_newline = on\n[greylist]\nenable = on\n").errors.empty());
    auto window = load(dir, "[greylist]\ndelay = 1h\nretry_window = 1h\n");
    REQUIRE(window.errors.size() == 1);
    CHECK(window.at(3, "greylist.retry_window").find("no retry could ever pass") != std::string::npos);
    auto zero = load(dir, "[greylist]\nretry_window = 0\n");
    CHECK_FALSE(zero.errors.empty());
    CHECK(load(dir, "[greylist]\ndelay = 0\n").errors.empty());
}
