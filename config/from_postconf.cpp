#include "config/from_postconf.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "config/config.h"
#include "config/ini_lines.h"
#include "config/keys.h"
#include "config/load_state.h"
#include "config/postfix_params.h"
#include "core/address.h"
#include "core/text.h"
#include "dnsbl/site.h"
#include "screen/access_list.h"

namespace smtpscreen {

namespace {

// Postfix 3.7's defaults (postconf -d) of the parameters the mapping reads: postscreen's
// own and those their defaults refer to. A parameter renamed in 3.6 defaults to its old
// name, as in Postfix, so a main.cf that still uses the old name is read right.
const std::map<std::string, std::string, std::less<>> kPostfixDefaults = {
    {"postscreen_access_list", "permit_mynetworks"},
    {"postscreen_blacklist_action", "ignore"},
    {"postscreen_denylist_action", "$postscreen_blacklist_action"},
    {"postscreen_dnsbl_whitelist_threshold", "0"},
    {"postscreen_dnsbl_allowlist_threshold", "$postscreen_dnsbl_whitelist_threshold"},
    {"postscreen_bare_newline_action", "ignore"},
    {"postscreen_bare_newline_enable", "no"},
    {"postscreen_bare_newline_ttl", "30d"},
    {"postscreen_cache_cleanup_interval", "12h"},
    {"postscreen_client_connection_count_limit", "$smtpd_client_connection_count_limit"},
    {"postscreen_command_count_limit", "20"},
    {"postscreen_command_time_limit", "${stress?{10}:{300}}s"},
    {"postscreen_dnsbl_action", "ignore"},
    {"postscreen_dnsbl_min_ttl", "60s"},
    {"postscreen_dnsbl_max_ttl", "1h"},
    {"postscreen_dnsbl_reply_map", ""},
    {"postscreen_dnsbl_sites", ""},
    {"postscreen_dnsbl_threshold", "1"},
    {"postscreen_dnsbl_timeout", "10s"},
    {"postscreen_forbidden_commands", "$smtpd_forbidden_commands"},
    {"postscreen_greet_action", "ignore"},
    {"postscreen_greet_banner", "$smtpd_banner"},
    {"postscreen_greet_ttl", "1d"},
    {"postscreen_greet_wait", "${stress?{2}:{6}}s"},
    {"postscreen_non_smtp_command_action", "drop"},
    {"postscreen_non_smtp_command_enable", "no"},
    {"postscreen_non_smtp_command_ttl", "30d"},
    {"postscreen_pipelining_action", "enforce"},
    {"postscreen_pipelining_enable", "no"},
    {"postscreen_pipelining_ttl", "30d"},
    {"postscreen_tls_security_level", "$smtpd_tls_security_level"},
    {"postscreen_upstream_proxy_protocol", ""},
    {"postscreen_upstream_proxy_timeout", "5s"},
    {"smtpd_banner", "$myhostname ESMTP $mail_name"},
    {"mail_name", "Postfix"},
    {"smtpd_client_connection_count_limit", "50"},
    {"smtpd_client_connection_rate_limit", "0"},
    {"anvil_rate_time_unit", "60s"},
    {"smtpd_forbidden_commands", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}"},
    {"smtpd_tls_security_level", ""},
    {"smtpd_tls_cert_file", ""},
    {"smtpd_tls_key_file", "$smtpd_tls_cert_file"},
    {"smtpd_tls_eccert_file", ""},
    {"smtpd_tls_eckey_file", "$smtpd_tls_eccert_file"},
    // Postfix 3's mynetworks_style = host adds this host's own interface addresses too;
    // those are said in the access list's comment.
    {"mynetworks", "127.0.0.0/8 [::1]/128"},
};

// Why a postscreen_* parameter without an equivalent has none; others get a general word.
const std::map<std::string, std::string, std::less<>> kNoEquivalent = {
    {"postscreen_cache_map", "smtpscreen keeps its own cache (cache.backend, cache.path); clients are tested afresh once"},
    {"postscreen_cache_retention_time", "smtpscreen drops a record once every pass in it has expired"},
    {"postscreen_allowlist_interfaces", "smtpscreen allowlists by client address only (access.file)"},
    {"postscreen_whitelist_interfaces", "smtpscreen allowlists by client address only (access.file)"},
    {"postscreen_command_filter", "smtpscreen does not rewrite commands"},
    {"postscreen_expansion_filter", "smtpscreen's replies carry no user text to filter"},
    {"postscreen_reject_footer", "smtpscreen's replies have no footer"},
    {"postscreen_reject_footer_maps", "smtpscreen's replies have no footer"},
    {"postscreen_disable_vrfy_command", "during deep tests smtpscreen answers VRFY with 502 and the backend decides after the handoff"},
    {"postscreen_helo_required", "the backend (smtpd_helo_required) decides after the handoff"},
    {"postscreen_discard_ehlo_keywords", "see deep.ehlo_keywords where this smtpscreen has it; the backend's own list applies after the handoff"},
    {"postscreen_discard_ehlo_keyword_address_maps", "the backend's own maps apply after the handoff"},
    {"postscreen_pre_queue_limit", "the nearest is limits.max_connections, which counts every connection"},
    {"postscreen_post_queue_limit", "the backend's own process limit applies"},
    {"postscreen_watchdog_timeout", "no equivalent: each smtpscreen wait has its own timeout"},
    {"postscreen_enforce_tls", "smtpscreen offers STARTTLS (tls.cert) and never requires it"},
    {"postscreen_use_tls", "read for tls.cert: smtpscreen offers STARTTLS when it has a certificate"},
    {"postscreen_tls_security_level", "read for tls.cert: smtpscreen offers STARTTLS when it has a certificate"},
};

int action_rank(std::string_view action) {
    return action == "drop" ? 2 : action == "enforce" ? 1 : 0;
}

// A Postfix time value ("30", "5s", "2w") with the parameter's default unit, as one of
// smtpscreen's durations; nullopt when it is not one.
std::optional<std::string> postfix_duration(std::string_view v, char default_unit) {
    v = trim(v, " \t");
    size_t n = 0;
    while (n < v.size() && v[n] >= '0' && v[n] <= '9') ++n;
    if (n == 0 || n > 9 || v.size() > n + 1) return std::nullopt;
    char unit = n == v.size() ? default_unit : ascii_lower(v[n]);
    long long count = std::stoll(std::string(v.substr(0, n)));
    if (unit == 'w') return fmt::format("{}d", count * 7);
    if (unit != 's' && unit != 'm' && unit != 'h' && unit != 'd') return std::nullopt;
    return fmt::format("{}{}", count, unit);
}

std::optional<std::string> postfix_boolean(std::string_view v) {
    auto l = ascii_lower(trim(v, " \t"));
    if (l == "yes") return "on";
    if (l == "no") return "off";
    return std::nullopt;
}

// "[2001:db8::]/32" and "[::1]" as Postfix writes IPv6 networks, without the brackets.
std::string without_brackets(std::string_view s) {
    if (s.empty() || s.front() != '[') return std::string(s);
    size_t close = s.find(']');
    if (close == std::string_view::npos) return std::string(s);
    return std::string(s.substr(1, close - 1)) + std::string(s.substr(close + 1));
}

struct Written {
    std::string value;
    std::string why;  // the comment line(s) above it, without "# "
};

class Migration {
public:
    explicit Migration(const PostfixParams& params) : params_(params) {}

    std::string run() {
        greet();
        dnsbl();
        deep();
        access();
        cache();
        listen();
        limits();
        tls();
        return render();
    }

private:
    // ---- reading main.cf

    std::optional<std::string> lookup(std::string_view name) const {
        if (auto v = params_.raw(name)) return v;
        if (auto it = kPostfixDefaults.find(name); it != kPostfixDefaults.end()) return it->second;
        return std::nullopt;
    }

    std::string value(std::string_view name, const std::map<std::string, std::string, std::less<>>& literal = {}) {
        consumed_.insert(std::string(name));
        auto raw = lookup(name);
        if (!raw) return {};
        return std::string(trim(expand_postfix_value(*raw, [this](std::string_view n) { return lookup(n); }, literal),
                                " \t"));
    }

    // Set in main.cf under this name or the one it had before Postfix 3.6.
    bool set_here(std::string_view name) const { return params_.has(name); }

    // "postscreen_x = value" as main.cf has it, for comments.
    std::string as_written(std::string_view name) const {
        auto raw = params_.raw(name);
        return fmt::format("{} = {}", name, raw ? *raw : "");
    }

    // ---- writing the INI

    // Problems the key's own loader finds with the value; empty when it loads.
    static std::string load_problem(const ConfigKey& key, const std::string& v, Config& into) {
        LoadState state{"--from-postconf", into, {}, {}};
        KeyContext ctx(state, key.full_name(), 0);
        key.load(ctx, v);
        std::string out;
        for (const auto& p : state.problems) out += (out.empty() ? "" : "; ") + p.text;
        return out;
    }

    // Writes `key = v` when postscreen's setting came from main.cf (`explicit_setting`)
    // or differs from smtpscreen's default; a value the key refuses becomes a comment.
    // Returns whether the key is written.
    bool put(std::string_view full_key, const std::string& v, const std::string& why, bool explicit_setting) {
        size_t dot = full_key.find('.');
        const ConfigKey* key = find_config_key(full_key.substr(0, dot), full_key.substr(dot + 1));
        if (key == nullptr) {
            not_mapped_.push_back(fmt::format("{}: {} is not a key of this smtpscreen", why, full_key));
            return false;
        }
        Config loaded;
        auto problem = load_problem(*key, v, loaded);
        if (!problem.empty()) {
            not_mapped_.push_back(fmt::format("{}: not mapped, {} = {} would not load: {}", why, full_key, v, problem));
            return false;
        }
        if (!explicit_setting && key->print(loaded) == key->default_value()) return false;
        if (!ini_key_lines(key->section, key->name, v)) {
            not_mapped_.push_back(fmt::format("{}: not mapped, {} = {} does not fit on INI lines", why, full_key, v));
            return false;
        }
        written_[std::string(full_key)] = Written{v, why};
        return true;
    }

    // The comment for a key whose postscreen parameter may or may not be in main.cf.
    std::string origin(std::string_view name, std::string_view key) const {
        if (set_here(name)) return as_written(name);
        auto* k = find_config_key(key.substr(0, key.find('.')), key.substr(key.find('.') + 1));
        return fmt::format("{} is not set: postscreen's default ({}) is kept, where smtpscreen's would be {}", name,
                           trim(expand_postfix_value(lookup(name).value_or(""),
                                                     [this](std::string_view n) { return lookup(n); },
                                                     {{"myhostname", "$myhostname"}}),
                                " \t"),
                           k ? k->default_value() : std::string("-"));
    }

    void simple_duration(std::string_view name, std::string_view key, char unit) {
        auto v = value(name);
        auto d = postfix_duration(v, unit);
        if (!d) {
            not_mapped_.push_back(fmt::format("{}: not mapped, \"{}\" is not a Postfix time value", as_written(name), v));
            return;
        }
        put(key, *d, origin(name, key), set_here(name));
    }

    void simple_integer(std::string_view name, std::string_view key) {
        put(key, value(name), origin(name, key), set_here(name));
    }

    void simple_action(std::string_view name, std::string_view key) {
        put(key, ascii_lower(value(name)), origin(name, key), set_here(name));
    }

    // ---- the sections

    void greet() {
        simple_duration("postscreen_greet_wait", "greet.wait", 's');
        simple_action("postscreen_greet_action", "greet.action");

        // $myhostname stays a name: smtpscreen's $hostname is the system's host name, or
        // greet.hostname where this smtpscreen has that key.
        bool has_hostname_key = find_config_key("greet", "hostname") != nullptr;
        if (set_here("myhostname") && has_hostname_key) {
            put("greet.hostname", value("myhostname"), as_written("myhostname"), true);
        }
        std::map<std::string, std::string, std::less<>> literal;
        if (has_hostname_key || !set_here("myhostname")) literal["myhostname"] = "$hostname";
        auto banner = value("postscreen_greet_banner", literal);
        bool explicit_banner = set_here("postscreen_greet_banner") || set_here("smtpd_banner");
        auto why = set_here("postscreen_greet_banner") ? as_written("postscreen_greet_banner")
                   : set_here("smtpd_banner")          ? "postscreen_greet_banner = $smtpd_banner, " +
                                                    as_written("smtpd_banner")
                                                       : origin("postscreen_greet_banner", "greet.banner");
        if (banner.empty()) {
            not_mapped_.push_back(fmt::format("{}: not mapped, postscreen then sends no \"220-\" teaser; smtpscreen "
                                              "always sends one (greet.banner)",
                                              why));
            return;
        }
        put("greet.banner", banner, why, explicit_banner);
    }

    void dnsbl() {
        std::vector<std::string> sites;
        for (const auto& item : split_postfix_list(value("postscreen_dnsbl_sites"))) {
            std::string error;
            if (parse_dnsbl_site(item, &error)) {
                sites.push_back(item);
            } else {
                not_mapped_.push_back(fmt::format("postscreen_dnsbl_sites entry \"{}\": not mapped, {}", item, error));
            }
        }
        if (!sites.empty()) {
            std::string list;
            for (const auto& s : sites) list += (list.empty() ? "" : ", ") + s;
            put("dnsbl.sites", list, as_written("postscreen_dnsbl_sites"), true);
        }
        simple_integer("postscreen_dnsbl_threshold", "dnsbl.threshold");
        auto allow = set_here("postscreen_dnsbl_whitelist_threshold") && !set_here("postscreen_dnsbl_allowlist_threshold")
                         ? "postscreen_dnsbl_whitelist_threshold"
                         : "postscreen_dnsbl_allowlist_threshold";
        consumed_.insert("postscreen_dnsbl_whitelist_threshold");
        simple_integer(allow, "dnsbl.allowlist_threshold");
        simple_action("postscreen_dnsbl_action", "dnsbl.action");
        simple_duration("postscreen_dnsbl_timeout", "dnsbl.timeout", 's');

        // postscreen reads the map through a Postfix table; the file behind an indexed
        // one (hash:, lmdb:, ...) is its source text, "key  value" lines as texthash: has.
        auto map = value("postscreen_dnsbl_reply_map");
        if (map.empty()) return;
        size_t colon = map.find(':');
        auto type = colon == std::string::npos ? std::string() : map.substr(0, colon);
        static const std::set<std::string, std::less<>> kFileTables = {"texthash", "hash", "btree", "lmdb",
                                                                         "cdb",      "dbm",  "sdbm"};
        if (kFileTables.count(type) == 0) {
            not_mapped_.push_back(fmt::format("{}: not mapped, smtpscreen reads a file of \"zone  public-name\" "
                                              "lines (texthash: form), not a {} table",
                                              as_written("postscreen_dnsbl_reply_map"), type.empty() ? map : type));
            return;
        }
        put("dnsbl.reply_map", map.substr(colon + 1), as_written("postscreen_dnsbl_reply_map"), true);
    }

    void deep() {
        struct Test {
            std::string_view name;  // postscreen's, between "postscreen_" and "_enable"
            std::string_view key;
        };
        static const Test kTests[] = {{"pipelining", "deep.pipelining"},
                                      {"non_smtp_command", "deep.non_smtp_command"},
                                      {"bare_newline", "deep.bare_newline"}};
        std::vector<std::string> on;
        bool any_set = false;
        for (const auto& t : kTests) {
            auto enable = fmt::format("postscreen_{}_enable", t.name);
            auto b = postfix_boolean(value(enable));
            if (!b) {
                not_mapped_.push_back(fmt::format("{}: not mapped, not yes or no", as_written(enable)));
                continue;
            }
            put(t.key, *b, origin(enable, t.key), set_here(enable));
            if (*b == "on") on.emplace_back(t.name);
            for (auto suffix : {"_enable", "_action", "_ttl"}) {
                any_set = any_set || set_here(fmt::format("postscreen_{}{}", t.name, suffix));
            }
        }
        // One action and one TTL for the three tests in smtpscreen: the strictest action
        // and the shortest TTL of the tests that are on (when none is: of those whose
        // action main.cf sets, or else of all three).
        std::vector<std::string> tests = on;
        for (const auto& t : kTests) {
            if (on.empty() && set_here(fmt::format("postscreen_{}_action", t.name))) tests.emplace_back(t.name);
        }
        if (tests.empty()) {
            for (const auto& t : kTests) tests.emplace_back(t.name);
        }
        std::string action, actions;
        std::optional<std::string> ttl;
        long long ttl_seconds = -1;
        std::string ttls;
        for (const auto& t : tests) {
            auto a = ascii_lower(value(fmt::format("postscreen_{}_action", t)));
            actions += fmt::format("{}postscreen_{}_action = {}", actions.empty() ? "" : ", ", t, a);
            if (action.empty() || action_rank(a) > action_rank(action)) action = a;
            auto ttl_name = fmt::format("postscreen_{}_ttl", t);
            auto d = postfix_duration(value(ttl_name), 'd');
            ttls += fmt::format("{}{} = {}", ttls.empty() ? "" : ", ", ttl_name, value(ttl_name));
            if (!d) continue;
            auto s = duration_seconds(*d);
            if (ttl_seconds < 0 || s < ttl_seconds) {
                ttl_seconds = s;
                ttl = d;
            }
        }
        for (const auto& t : kTests) {  // those of tests that are off are read too
            consumed_.insert(fmt::format("postscreen_{}_action", t.name));
            consumed_.insert(fmt::format("postscreen_{}_ttl", t.name));
        }
        if (!on.empty() || any_set) {
            put("deep.action", action,
                fmt::format("{} (smtpscreen has one action for the deep tests: the strictest)", actions), true);
            if (ttl) {
                put("cache.deep_ttl", *ttl,
                    fmt::format("{} (smtpscreen has one TTL for the deep tests: the shortest)", ttls), false);
            }
        }

        // Words only: postscreen's regexp: entry for lines that do not start with a letter
        // is smtpscreen's own rule of the non-SMTP test.
        bool explicit_commands = set_here("postscreen_forbidden_commands") || set_here("smtpd_forbidden_commands");
        std::string words, skipped;
        for (const auto& item : split_postfix_list(value("postscreen_forbidden_commands"))) {
            if (item.find(':') != std::string::npos) {
                skipped += (skipped.empty() ? "" : ", ") + item;
                continue;
            }
            words += (words.empty() ? "" : ", ") + ascii_upper(item);
        }
        auto why = set_here("postscreen_forbidden_commands") ? as_written("postscreen_forbidden_commands")
                   : set_here("smtpd_forbidden_commands")
                       ? "postscreen_forbidden_commands = $smtpd_forbidden_commands, " +
                             as_written("smtpd_forbidden_commands")
                       : origin("postscreen_forbidden_commands", "deep.forbidden_commands");
        if (!skipped.empty()) {
            why += fmt::format(" (without {}: smtpscreen's non-SMTP test fails every line that does not start with "
                               "a letter on its own)",
                               skipped);
        }
        bool non_smtp_on = std::find(on.begin(), on.end(), "non_smtp_command") != on.end();
        if (!words.empty() && (explicit_commands || non_smtp_on)) put("deep.forbidden_commands", words, why, explicit_commands);
    }

    // postscreen_access_list: permit_mynetworks and cidr: tables, first match wins, as
    // in access.file. One cidr: table that access.file reads as it is is named; anything
    // else becomes the lines of a new file, written out as a comment.
    void access() {
        simple_action(set_here("postscreen_blacklist_action") && !set_here("postscreen_denylist_action")
                          ? "postscreen_blacklist_action"
                          : "postscreen_denylist_action",
                      "access.action");
        consumed_.insert("postscreen_blacklist_action");

        auto list_text = value("postscreen_access_list");
        auto items = split_postfix_list(list_text);
        std::string why = set_here("postscreen_access_list")
                              ? as_written("postscreen_access_list")
                              : "postscreen_access_list is not set: postscreen's default (permit_mynetworks)";
        if (items.size() == 1 && items[0].rfind("cidr:", 0) == 0) {
            auto path = items[0].substr(5);
            std::string read_error;
            auto text = read_text_file(path, &read_error);
            std::vector<std::string> errors;
            if (text) parse_access_list(*text, path, errors);
            if (text && errors.empty()) {
                put("access.file", path, why + " (access.file reads the table as it is)", true);
                return;
            }
        }
        std::vector<std::string> rules;
        std::vector<std::string> problems;
        for (const auto& item : items) {
            if (item == "permit_mynetworks") {
                mynetworks_rules(rules, problems);
            } else if (item.rfind("cidr:", 0) == 0) {
                cidr_rules(item.substr(5), rules, problems);
            } else {
                problems.push_back(fmt::format("\"{}\" is neither permit_mynetworks nor a cidr: table", item));
            }
        }
        if (rules.empty() && problems.empty()) return;
        std::string block = why + ": smtpscreen reads one file of \"ip[/len] permit|reject\" lines, first match wins.";
        if (!rules.empty()) {
            block += " Save these lines (without \"# \") as a file, e.g. /etc/smtpscreen/access.cidr, and set "
                     "access.file = /etc/smtpscreen/access.cidr:";
            for (const auto& r : rules) block += "\n" + r;
        }
        for (const auto& p : problems) block += "\nnot converted: " + p;
        access_block_ = block;
    }

    void mynetworks_rules(std::vector<std::string>& rules, std::vector<std::string>& problems) {
        if (!set_here("mynetworks")) {
            problems.push_back("mynetworks is not set, so Postfix also counts this host's own interface addresses "
                               "(mynetworks_style = host); only loopback is converted");
        }
        for (const auto& item : split_postfix_list(value("mynetworks"))) {
            auto network = without_brackets(item);
            if (Cidr::parse(network)) {
                rules.push_back(fmt::format("{} permit", network));
            } else {
                problems.push_back(fmt::format("mynetworks entry \"{}\" (only networks and addresses are converted)",
                                               item));
            }
        }
    }

    static void cidr_rules(const std::string& path, std::vector<std::string>& rules, std::vector<std::string>& problems) {
        std::string why;
        auto text = read_text_file(path, &why);
        if (!text) {
            problems.push_back(fmt::format("cidr:{}: cannot read it: {}", path, why));
            return;
        }
        int lineno = 0;
        std::string_view rest = *text;
        while (!rest.empty()) {
            size_t nl = rest.find('\n');
            auto line = trim(rest.substr(0, nl), " \t\r");
            rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
            ++lineno;
            if (line.empty() || line.front() == '#') continue;
            size_t gap = line.find_first_of(" \t");
            auto pattern = without_brackets(line.substr(0, gap));
            auto result = ascii_lower(gap == std::string_view::npos ? std::string_view{} : trim(line.substr(gap), " \t"));
            if ((result == "permit" || result == "reject") && Cidr::parse(pattern)) {
                rules.push_back(fmt::format("{} {}", pattern, result));
            } else {
                problems.push_back(fmt::format("{}:{}: \"{}\" (only \"network permit\" and \"network reject\" lines "
                                               "carry over; a dunno, a negation or an if/endif block does not)",
                                               path, lineno, line));
            }
        }
    }

    void cache() {
        simple_duration("postscreen_cache_cleanup_interval", "cache.cleanup_interval", 's');
        simple_duration("postscreen_greet_ttl", "cache.pregreet_ttl", 'd');
        simple_duration("postscreen_dnsbl_min_ttl", "cache.dnsbl_min_ttl", 's');
        // Before Postfix 3.1 one postscreen_dnsbl_ttl; since then the maximum defaults to it.
        auto max_name = set_here("postscreen_dnsbl_ttl") && !set_here("postscreen_dnsbl_max_ttl")
                            ? "postscreen_dnsbl_ttl"
                            : "postscreen_dnsbl_max_ttl";
        consumed_.insert("postscreen_dnsbl_ttl");
        simple_duration(max_name, "cache.dnsbl_max_ttl", 'h');

        // postscreen takes a minimum above the maximum (the minimum wins); smtpscreen
        // refuses it, so the maximum is raised to the minimum, which is what postscreen did.
        Config ttl;
        for (auto name : {"dnsbl_min_ttl", "dnsbl_max_ttl"}) {
            auto it = written_.find(fmt::format("cache.{}", name));
            if (it != written_.end()) load_problem(*find_config_key("cache", name), it->second.value, ttl);
        }
        if (ttl.cache_dnsbl_min_ttl > ttl.cache_dnsbl_max_ttl) {
            auto min = written_.find("cache.dnsbl_min_ttl");
            written_["cache.dnsbl_max_ttl"] = Written{
                min != written_.end() ? min->second.value : find_config_key("cache", "dnsbl_min_ttl")->default_value(),
                fmt::format("{} (raised to postscreen_dnsbl_min_ttl, which wins in postscreen; "
                                       "smtpscreen refuses a minimum above the maximum)",
                                       set_here(max_name) ? as_written(max_name) : origin(max_name, "cache.dnsbl_max_ttl"))};
        }
    }

    void listen() {
        auto proxy = ascii_lower(value("postscreen_upstream_proxy_protocol"));
        if (proxy == "haproxy") {
            put("listen.proxy_protocol", "auto",
                as_written("postscreen_upstream_proxy_protocol") +
                    " (v1 or v2; list the load balancers' addresses in listen.proxy_from, loopback by default)",
                true);
        } else if (!proxy.empty()) {
            not_mapped_.push_back(fmt::format("{}: not mapped, the only protocol is haproxy",
                                              as_written("postscreen_upstream_proxy_protocol")));
        }
        simple_duration("postscreen_upstream_proxy_timeout", "listen.proxy_timeout", 's');
    }

    void limits() {
        auto count = value("postscreen_client_connection_count_limit");
        if (count == "0") {
            not_mapped_.push_back(fmt::format("{}: not mapped, postscreen's 0 means no limit; smtpscreen's "
                                              "limits.per_client_connections is at least 1",
                                              origin("postscreen_client_connection_count_limit", "")));
        } else {
            auto why = set_here("postscreen_client_connection_count_limit")
                           ? as_written("postscreen_client_connection_count_limit")
                       : set_here("smtpd_client_connection_count_limit")
                           ? "postscreen_client_connection_count_limit = $smtpd_client_connection_count_limit, " +
                                 as_written("smtpd_client_connection_count_limit")
                           : origin("postscreen_client_connection_count_limit", "limits.per_client_connections");
            put("limits.per_client_connections", count, why,
                set_here("postscreen_client_connection_count_limit") || set_here("smtpd_client_connection_count_limit"));
        }
        simple_integer("postscreen_command_count_limit", "limits.command_count_limit");
        simple_duration("postscreen_command_time_limit", "limits.command_time_limit", 's');
        client_rate();
    }

    // anvil's connection rate limit, which smtpd applies behind postscreen: smtpscreen
    // can apply it where the connection arrives. Only when main.cf sets one (0 is off
    // in both).
    void client_rate() {
        if (!set_here("smtpd_client_connection_rate_limit")) return;
        auto count = value("smtpd_client_connection_rate_limit");
        auto unit_text = value("anvil_rate_time_unit");
        auto why = fmt::format("{}, {}", as_written("smtpd_client_connection_rate_limit"),
                               set_here("anvil_rate_time_unit")
                                   ? as_written("anvil_rate_time_unit")
                                   : "anvil_rate_time_unit is not set: Postfix's default (60s)");
        if (count == "0") return;
        auto unit = postfix_duration(unit_text, 's');
        if (!unit) {
            not_mapped_.push_back(fmt::format("{}: not mapped, \"{}\" is not a Postfix time value", why, unit_text));
            return;
        }
        why += " (smtpd's anvil limit, now at the edge as well; a client that an access.file permit line "
               "allowlists is not counted, as smtpd_client_event_limit_exceptions = $mynetworks exempts it)";
        put("limits.per_client_rate", fmt::format("{}/{}", count, *unit), why, true);
    }

    // postscreen offers STARTTLS through tlsproxy(8) with smtpd's certificate.
    void tls() {
        auto level = ascii_lower(value("postscreen_tls_security_level"));
        if (set_here("postscreen_enforce_tls") && postfix_boolean(value("postscreen_enforce_tls")) == "on") level = "encrypt";
        else if (set_here("postscreen_use_tls") && postfix_boolean(value("postscreen_use_tls")) == "on") level = "may";
        if (level != "may" && level != "encrypt") return;
        std::string cert = value("smtpd_tls_cert_file"), key = value("smtpd_tls_key_file");
        std::string ec_cert = value("smtpd_tls_eccert_file"), ec_key = value("smtpd_tls_eckey_file");
        if (cert.empty() && ec_cert.empty()) {
            not_mapped_.push_back(fmt::format("postscreen_tls_security_level = {}: not mapped, smtpd_tls_cert_file "
                                              "is not set (smtpd_tls_chain_files is not read: give tls.cert and "
                                              "tls.key as PEM files)",
                                              level));
            return;
        }
        std::string certs, keys;
        for (auto [c, k] : {std::pair{cert, key}, std::pair{ec_cert, ec_key}}) {
            if (c.empty()) continue;
            certs += (certs.empty() ? "" : ", ") + c;
            keys += (keys.empty() ? "" : ", ") + k;
        }
        auto why = fmt::format("postscreen_tls_security_level = {}: smtpd's certificate{}", level,
                               level == "encrypt" ? " (smtpscreen offers STARTTLS and does not require it)" : "");
        // Both or neither: one without the other does not load.
        auto* cert_key = find_config_key("tls", "cert");
        auto* key_key = find_config_key("tls", "key");
        Config scratch;
        if (cert_key && key_key && load_problem(*cert_key, certs, scratch).empty() &&
            load_problem(*key_key, keys, scratch).empty()) {
            put("tls.cert", certs, why, true);
            put("tls.key", keys, why, true);
        } else {
            put("tls.cert", certs, why, true);  // says why it does not load
            put("tls.key", keys, why, true);
            written_.erase("tls.cert");
            written_.erase("tls.key");
        }
    }

    static long long duration_seconds(const std::string& d) {
        long long n = std::stoll(d.substr(0, d.size() - 1));
        switch (d.back()) {
            case 'm': return n * 60;
            case 'h': return n * 3600;
            case 'd': return n * 86400;
            default: return n;
        }
    }

    // ---- output

    std::string render() {
        std::string out =
            "# smtpscreen.ini from postscreen's settings (smtpscreen --from-postconf < postconf -n output).\n"
            "# Each key below says the postscreen parameter it comes from. Not in main.cf, so set them\n"
            "# yourself: listen.address (postscreen's smtp line in master.cf) and backend.address\n"
            "# (the smtpd that postscreen passes clients to, now on its own port with\n"
            "# smtpd_upstream_proxy_protocol = haproxy or smtpd_authorized_xclient_hosts); see\n"
            "# smtpscreen.ini(5) and the README's \"Coming from postscreen\".\n"
            "# Log reports and fail2ban that read postscreen's lines keep working with\n"
            "# log.syslog_name = postfix/postscreen.\n";
        std::string_view section;
        for (const auto& key : config_keys()) {
            auto full = key.full_name();
            bool is_access_file = full == "access.file";
            auto it = written_.find(full);
            if (it == written_.end() && !(is_access_file && !access_block_.empty())) continue;
            if (key.section != section) {
                section = key.section;
                out += fmt::format("\n[{}]\n", section);
            }
            if (it == written_.end()) {
                out += comment(access_block_);
                continue;
            }
            out += comment(it->second.why);
            out += *ini_key_lines(key.section, key.name, it->second.value);
        }
        std::vector<std::string> rest = not_mapped_;
        for (const auto& name : params_.names()) {
            if (name.rfind("postscreen_", 0) != 0 || consumed_.count(name) != 0) continue;
            auto reason = kNoEquivalent.find(name);
            rest.push_back(fmt::format("{}: not mapped, {}", as_written(name),
                                       reason != kNoEquivalent.end() ? reason->second
                                                                     : "smtpscreen has no equivalent"));
        }
        for (const auto& line : params_.unreadable_lines()) {
            rest.push_back(fmt::format("\"{}\": not read, not a \"name = value\" line", line));
        }
        if (!rest.empty()) {
            out += "\n# Not mapped:\n";
            for (const auto& r : rest) out += comment(r);
        }
        return out;
    }

    static std::string comment(const std::string& text) {
        std::string out;
        for (auto line : split(text, "\n")) out += fmt::format("# {}\n", line);
        return out;
    }

    const PostfixParams& params_;
    std::map<std::string, Written> written_;
    std::vector<std::string> not_mapped_;
    std::set<std::string, std::less<>> consumed_;
    std::string access_block_;
};

}  // namespace

std::string ini_from_postconf(std::string_view postconf_n) {
    auto params = PostfixParams::parse(postconf_n);
    return Migration(params).run();
}

}  // namespace smtpscreen
