#include <doctest/doctest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "config/config.h"
#include "config/from_postconf.h"
#include "config/keys.h"
#include "config/postfix_params.h"

#include "fixtures.h"

using namespace smtpscreen;
using smtpscreen::test::TempDir;

namespace {

// The INI that --from-postconf writes for `postconf_n`, loaded as smtpscreen loads it.
struct Migrated {
    std::string ini;
    std::shared_ptr<Config> config;
    std::vector<std::string> errors;

    bool says(const std::string& needle) const { return ini.find(needle) != std::string::npos; }
};

Migrated migrate(const TempDir& dir, const std::string& postconf_n) {
    Migrated m;
    m.ini = ini_from_postconf(postconf_n);
    m.config = load_config(dir.write("migrated.ini", m.ini), m.errors);
    return m;
}

// migrate(), for main.cf lines whose INI must load without an error.
Migrated migrate_clean(const TempDir& dir, const std::string& postconf_n) {
    Migrated m = migrate(dir, postconf_n);
    REQUIRE_MESSAGE(m.errors.empty(),
                    "the INI:\n" << m.ini << "\nits errors: " << fmt::format("{}", fmt::join(m.errors, "; ")));
    return m;
}

std::optional<std::string> no_params(std::string_view) { return std::nullopt; }

}  // namespace

TEST_CASE("postconf: Postfix's $name expansion, as postscreen's defaults use it") {
    std::map<std::string, std::string> main = {{"a", "x$b"}, {"b", "y"}, {"loop", "$loop"}};
    ParamLookup lookup = [&](std::string_view n) -> std::optional<std::string> {
        auto it = main.find(std::string(n));
        if (it == main.end()) return std::nullopt;
        return it->second;
    };
    CHECK(expand_postfix_value("${stress?{2}:{6}}s", lookup) == "6s");
    main["stress"] = "yes";
    CHECK(expand_postfix_value("${stress?{2}:{6}}s", lookup) == "2s");
    CHECK(expand_postfix_value("${stress?busy}", lookup) == "busy");
    CHECK(expand_postfix_value("${stress:calm}", lookup) == "");
    CHECK(expand_postfix_value("$a-${a}-$(a)", lookup) == "xy-xy-xy");
    CHECK(expand_postfix_value("$$5 $unknown.", lookup) == "$5 .");
    CHECK(expand_postfix_value("$loop", lookup).empty());  // stops, no endless recursion
    // Doubling at every level would be 2^30 lookups and a gigabyte of text: bounded.
    for (int i = 0; i < 30; ++i) main["d" + std::to_string(i)] = fmt::format("$d{0}$d{0}", i + 1);
    main["d30"] = "x";
    main["wide"] = "$wide$wide$wide$wide$wide";
    auto doubled = expand_postfix_value("$d0", lookup);
    CHECK(doubled.size() <= 70 * 1024);
    CHECK(expand_postfix_value("$wide", lookup).empty());
    CHECK(expand_postfix_value("$myhostname ESMTP $a", lookup, {{"myhostname", "$hostname"}}) ==
          "$hostname ESMTP xy");
    CHECK(expand_postfix_value("${unbalanced", no_params) == "${unbalanced");
}

TEST_CASE("postconf: lists keep {...} groups, and postconf -n's lines are read as main.cf's") {
    CHECK(split_postfix_list("CONNECT GET,POST  regexp:{{/^[^A-Z]/ Bogus}}") ==
          std::vector<std::string>{"CONNECT", "GET", "POST", "regexp:{{/^[^A-Z]/ Bogus}}"});
    auto p = PostfixParams::parse("# comment\n"
                                  "postscreen_dnsbl_sites = a.test*2,\n"
                                  "    b.test*1\r\n"
                                  "\n"
                                  "not a parameter\n"
                                  "postscreen_greet_wait = 3s\n"
                                  "postscreen_greet_wait = 4s\n");
    CHECK(p.raw("postscreen_dnsbl_sites") == "a.test*2, b.test*1");
    CHECK(p.raw("postscreen_greet_wait") == "4s");  // a later line wins
    CHECK(p.names() == std::vector<std::string>{"postscreen_dnsbl_sites", "postscreen_greet_wait"});
    CHECK(p.unreadable_lines() == std::vector<std::string>{"not a parameter"});
}

TEST_CASE("from-postconf: a typical postscreen setup maps key by key and loads") {
    TempDir dir;
    auto m = migrate_clean(dir,
                           "compatibility_level = 3.6\n"
                           "myhostname = mx.example.org\n"
                           "postscreen_dnsbl_sites = zen.spamhaus.org=127.0.0.[2..11]*3\n"
                           "    bl.spamcop.net*2 list.dnswl.org=127.0.[0..255].[1..3]*-2,\n"
                           "    b.barracudacentral.org=127.0.0.2*2\n"
                           "postscreen_dnsbl_threshold = 3\n"
                           "postscreen_dnsbl_allowlist_threshold = -1\n"
                           "postscreen_dnsbl_action = enforce\n"
                           "postscreen_dnsbl_timeout = 7\n"
                           "postscreen_greet_action = drop\n"
                           "postscreen_greet_wait = ${stress?{2}:{4}}s\n"
                           "postscreen_greet_ttl = 2\n"
                           "postscreen_greet_banner = $myhostname Welcome\n"
                           "postscreen_pipelining_enable = yes\n"
                           "postscreen_non_smtp_command_enable = yes\n"
                           "postscreen_bare_newline_enable = yes\n"
                           "postscreen_bare_newline_action = enforce\n"
                           "postscreen_non_smtp_command_action = enforce\n"
                           "postscreen_pipelining_ttl = 2w\n"
                           "postscreen_bare_newline_ttl = 10d\n"
                           "postscreen_forbidden_commands = $smtpd_forbidden_commands, HELP\n"
                           "postscreen_dnsbl_min_ttl = 5m\n"
                           "postscreen_dnsbl_max_ttl = 2h\n"
                           "postscreen_cache_cleanup_interval = 0\n"
                           "postscreen_cache_map = btree:$data_directory/postscreen_cache\n"
                           "postscreen_client_connection_count_limit = 30\n"
                           "postscreen_command_count_limit = 10\n"
                           "postscreen_command_time_limit = 2m\n"
                           "postscreen_upstream_proxy_protocol = haproxy\n"
                           "postscreen_upstream_proxy_timeout = 9s\n"
                           "postscreen_denylist_action = enforce\n"
                           "postscreen_reject_footer = see https://example.org\n"
                           "postscreen_whitelist_interfaces = !168.100.189.8 static:all\n");
    INFO(m.ini);
    const Config& c = *m.config;
    REQUIRE(c.dnsbl_sites.size() == 4);
    CHECK(c.dnsbl_sites[0].zone == "zen.spamhaus.org");
    CHECK(c.dnsbl_sites[0].weight == 3);
    CHECK(c.dnsbl_sites[0].matches(0x7f00000b));   // 127.0.0.11
    CHECK(!c.dnsbl_sites[0].matches(0x7f00000c));  // 127.0.0.12: not in the filter
    CHECK(c.dnsbl_sites[2].weight == -2);
    CHECK(c.dnsbl_sites[3].text == "b.barracudacentral.org=127.0.0.2*2");
    CHECK(c.dnsbl_threshold == 3);
    CHECK(c.dnsbl_allowlist_threshold == -1);
    CHECK(c.dnsbl_action == Action::Enforce);
    CHECK(c.dnsbl_timeout == Millis{7000});
    CHECK(c.greet_action == Action::Drop);
    CHECK(c.greet_wait == Millis{4000});
    CHECK(c.cache_pregreet_ttl == Millis{2LL * 86400 * 1000});  // postscreen_greet_ttl's unit is the day
    CHECK(c.deep_pipelining);
    CHECK(c.deep_non_smtp_command);
    CHECK(c.deep_bare_newline);
    CHECK(c.deep_action == Action::Enforce);  // all three say enforce
    CHECK(c.cache_deep_ttl == Millis{10LL * 86400 * 1000});  // the shortest of 14d, 30d, 10d
    CHECK(c.deep_forbidden_commands == std::vector<std::string>{"CONNECT", "GET", "POST", "HELP"});
    CHECK(c.cache_dnsbl_min_ttl == Millis{300000});
    CHECK(c.cache_dnsbl_max_ttl == Millis{7200000});
    CHECK(c.cache_cleanup_interval == Millis{0});
    CHECK(c.per_client_connections == 30);
    CHECK(c.command_count_limit == 10);
    CHECK(c.command_time_limit == Millis{120000});
    CHECK(c.proxy_protocol == ProxyProtocol::Auto);
    CHECK(c.proxy_timeout == Millis{9000});
    CHECK(c.access_action == Action::Enforce);
    // $myhostname: greet.hostname, where this smtpscreen has that key; otherwise the name
    // itself, since smtpscreen's $hostname would be the system's host name.
    if (find_config_key("greet", "hostname") != nullptr) {
        CHECK(c.banner_template == "$hostname Welcome");
        CHECK(m.says("\nhostname = mx.example.org\n"));
    } else {
        CHECK(c.banner_template == "mx.example.org Welcome");
    }
    // Every parameter without an equivalent is named in a comment, with why.
    CHECK(m.says("# postscreen_cache_map = btree:$data_directory/postscreen_cache: not mapped"));
    CHECK(m.says("# postscreen_reject_footer = see https://example.org: not mapped"));
    CHECK(m.says("# postscreen_whitelist_interfaces = !168.100.189.8 static:all: not mapped"));
    CHECK(m.says("regexp:{{/^[^A-Z]/ Bogus}}"));  // said why it is left out
    CHECK(!m.says("compatibility_level"));         // not postscreen's: read, not reported
    // Each key says where it came from.
    CHECK(m.says("# postscreen_greet_wait = ${stress?{2}:{4}}s\nwait = 4s\n"));
}

TEST_CASE("from-postconf: postscreen's own defaults are kept where smtpscreen's differ") {
    TempDir dir;
    auto m = migrate_clean(dir, "postscreen_greet_wait = 2s\n");
    INFO(m.ini);
    // postscreen ships "ignore" for the pregreet, DNSBL and access-list actions.
    CHECK(m.config->greet_action == Action::Ignore);
    CHECK(m.config->dnsbl_action == Action::Ignore);
    CHECK(m.config->access_action == Action::Ignore);
    CHECK(m.says("postscreen_greet_action is not set: postscreen's default (ignore) is kept, where smtpscreen's "
                 "would be enforce"));
    // The same as smtpscreen's: not written.
    CHECK(!m.says("[limits]"));
    CHECK(!m.config->deep_tests_enabled());
    CHECK(!m.says("deep.action"));
    // permit_mynetworks, postscreen's default access list, as lines for a file of its own.
    CHECK(m.says("# 127.0.0.0/8 permit\n# ::1/128 permit\n"));
    CHECK(m.config->access_file.empty());
}

TEST_CASE("from-postconf: access lists, from one cidr table or from several sources") {
    TempDir dir;
    auto plain = dir.write("plain.cidr", "# ours\n192.0.2.0/24 permit\n198.51.100.7   REJECT\n2001:db8::/32 reject\n");
    auto m = migrate_clean(dir, "postscreen_access_list = cidr:" + plain + "\npostscreen_blacklist_action = drop\n");
    INFO(m.ini);
    CHECK(m.config->access_file == plain);  // read as it is
    CHECK(m.config->access_rules.size() == 3);
    CHECK(m.config->access_action == Action::Drop);  // the pre-3.6 name is read too

    auto odd = dir.write("odd.cidr", "[2001:db8:1::]/48 permit\n10.0.0.0/8 dunno\n203.0.113.9 reject\n");
    auto m2 = migrate_clean(dir, "mynetworks = 127.0.0.0/8 [::1]/128 192.168.0.0/16\n"
                           "postscreen_access_list = permit_mynetworks, cidr:" + odd + "\n");
    INFO(m2.ini);
    CHECK(m2.config->access_file.empty());
    CHECK(m2.says("# 127.0.0.0/8 permit\n# ::1/128 permit\n# 192.168.0.0/16 permit\n# 2001:db8:1::/48 permit\n"
                  "# 203.0.113.9 reject\n"));
    CHECK(m2.says("# not converted: " + odd + ":2: \"10.0.0.0/8 dunno\""));

    auto m3 = migrate(dir, "postscreen_access_list = cidr:" + dir.write("gone", "") + "-missing\n");
    CHECK(m3.errors.empty());
    CHECK(m3.says("cannot read it"));
}

TEST_CASE("from-postconf: values that do not fit become comments naming the parameter") {
    TempDir dir;
    auto m = migrate_clean(dir,
                           "postscreen_dnsbl_sites = good.test*2, bad.test=127.0.0.300, other.test*x\n"
                           "postscreen_greet_wait = soon\n"
                           "postscreen_client_connection_count_limit = 0\n"
                           "postscreen_dnsbl_allowlist_threshold = 2\n"
                           "postscreen_greet_banner =\n"
                           "postscreen_dnsbl_reply_map = pcre:/etc/postfix/dnsbl_reply.pcre\n"
                           "postscreen_pipelining_enable = maybe\n");
    INFO(m.ini);
    REQUIRE(m.config->dnsbl_sites.size() == 1);
    CHECK(m.config->dnsbl_sites[0].zone == "good.test");
    CHECK(m.says("# postscreen_dnsbl_sites entry \"bad.test=127.0.0.300\": not mapped"));
    CHECK(m.says("# postscreen_dnsbl_sites entry \"other.test*x\": not mapped"));
    CHECK(m.says("# postscreen_greet_wait = soon: not mapped"));
    CHECK(m.says("postscreen_client_connection_count_limit = 0: not mapped"));
    CHECK(m.says("# postscreen_dnsbl_allowlist_threshold = 2: not mapped, dnsbl.allowlist_threshold = 2 would not "
                 "load"));
    CHECK(m.says("# postscreen_greet_banner = : not mapped"));
    CHECK(m.says("# postscreen_dnsbl_reply_map = pcre:/etc/postfix/dnsbl_reply.pcre: not mapped"));
    CHECK(m.says("# postscreen_pipelining_enable = maybe: not mapped"));
    CHECK(m.config->dnsbl_allowlist_threshold == 0);
}

TEST_CASE("from-postconf: the reply map's source file and deep tests that disagree") {
    TempDir dir;
    auto map = dir.write("dnsbl_reply", "zen.spamhaus.org  zen.example\n");
    auto m = migrate_clean(dir, "postscreen_dnsbl_sites = zen.spamhaus.org*2\n"
                          "postscreen_dnsbl_reply_map = hash:" + map + "\n"
                          "postscreen_pipelining_enable = yes\n"
                          "postscreen_bare_newline_enable = yes\n");
    INFO(m.ini);
    CHECK(m.config->dnsbl_reply_map_file == map);
    CHECK(m.config->dnsbl_reply_map.at("zen.spamhaus.org") == "zen.example");
    // pipelining enforce (default), bare newline ignore (default): the strictest is kept.
    CHECK(m.config->deep_action == Action::Enforce);
    CHECK(!m.config->deep_non_smtp_command);
    CHECK(m.says("postscreen_pipelining_action = enforce, postscreen_bare_newline_action = ignore"));
}

TEST_CASE("from-postconf: a DNSBL minimum TTL above the maximum still loads, as postscreen's minimum wins") {
    TempDir dir;
    auto m = migrate_clean(dir, "postscreen_dnsbl_min_ttl = 2h\n");
    INFO(m.ini);
    CHECK(m.config->cache_dnsbl_min_ttl == Millis{7200000});
    CHECK(m.config->cache_dnsbl_max_ttl == Millis{7200000});
    auto legacy = migrate_clean(dir, "postscreen_dnsbl_ttl = 30m\npostscreen_dnsbl_min_ttl = 1h\n");
    INFO(legacy.ini);
    CHECK(legacy.config->cache_dnsbl_max_ttl == Millis{3600000});
    CHECK(legacy.says("# postscreen_dnsbl_ttl = 30m (raised to postscreen_dnsbl_min_ttl"));
    // Only the maximum set, below postscreen's (and smtpscreen's) default minimum of 60s.
    auto zero = migrate_clean(dir, "postscreen_dnsbl_max_ttl = 0\n");
    INFO(zero.ini);
    CHECK(zero.config->cache_dnsbl_max_ttl == Millis{60000});
}

TEST_CASE("from-postconf: anvil's connection rate limit becomes limits.per_client_rate") {
    TempDir dir;
    auto m = migrate(dir, "smtpd_client_connection_rate_limit = 30\n");
    INFO(m.ini);
    REQUIRE(m.errors.empty());
    CHECK(m.config->per_client_rate == RateLimit{30, Millis(60000)});  // anvil_rate_time_unit's default, 60s
    CHECK(m.says("# smtpd_client_connection_rate_limit = 30, anvil_rate_time_unit is not set: Postfix's default "
                 "(60s)"));

    auto m2 = migrate(dir, "smtpd_client_connection_rate_limit = 10\nanvil_rate_time_unit = 2m\n");
    INFO(m2.ini);
    REQUIRE(m2.errors.empty());
    CHECK(m2.config->per_client_rate == RateLimit{10, Millis(120000)});

    // 0 (Postfix's default) is off in both: nothing written.
    auto m3 = migrate(dir, "smtpd_client_connection_rate_limit = 0\n");
    REQUIRE(m3.errors.empty());
    CHECK(!m3.says("per_client_rate"));
    CHECK(!m3.config->per_client_rate.on());

    // A value smtpscreen cannot take is said, not written.
    auto m4 = migrate(dir, "smtpd_client_connection_rate_limit = 30\nanvil_rate_time_unit = soon\n");
    INFO(m4.ini);
    REQUIRE(m4.errors.empty());
    CHECK(m4.says("\"soon\" is not a Postfix time value"));
    CHECK(!m4.config->per_client_rate.on());
}
