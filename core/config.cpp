#include "core/config.h"

#include <fcntl.h>
#include <ini.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <utility>

#include "core/credentials.h"
#include "core/text.h"
#include "screen/access_list.h"

namespace smtpscreen {

namespace {

constexpr std::string_view kSpace = " \t\r";

std::string_view trim(std::string_view s) { return smtpscreen::trim(s, kSpace); }

std::string quote(std::string_view v) {
    return fmt::format("\"{}\"", v);
}

// Comma-separated list, items trimmed; empty items (a trailing comma left over from
// wrapping a long list) are skipped rather than refused.
std::vector<std::string_view> split_list(std::string_view s) {
    std::vector<std::string_view> items;
    while (true) {
        size_t comma = s.find(',');
        auto item = trim(s.substr(0, comma));
        if (!item.empty()) items.push_back(item);
        if (comma == std::string_view::npos) break;
        s.remove_prefix(comma + 1);
    }
    return items;
}

// Reads a whole regular file. Refusing directories and devices here gives a clear
// message instead of an empty rule set or a read that never ends.
std::optional<std::string> read_text_file(const std::string& path, std::string* why) {
    // O_NONBLOCK: opening a FIFO must not hang the start; fstat below refuses it.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *why = std::strerror(errno);
        return std::nullopt;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a regular file";
        ::close(fd);
        return std::nullopt;
    }
    std::string text;
    char buf[65536];
    while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            *why = std::strerror(errno);
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return text;
}

// ---------------------------------------------------------------------------------
// The keys in the order of smtpscreen.ini(5). Each entry validates one raw value into
// Config.

struct Problem {
    int line;  // line of the INI file it belongs to (0: the file as a whole), for sorting
    std::string text;
};

struct RawValue {
    std::string value;
    int line;
};

class KeyContext;
using ApplyFn = void (*)(KeyContext&, std::string_view value);

struct KeyDef {
    std::string_view section;
    std::string_view name;
    ApplyFn apply;
};

// Shared by every key of one load: where we are and what went wrong.
struct LoadState {
    std::string path;
    Config& cfg;
    std::vector<Problem> problems;
    std::map<std::string, RawValue> values;  // "section.key" -> value as written

    void add(int line, std::string_view key, std::string_view what) {
        if (line > 0) {
            problems.push_back({line, fmt::format("{}:{}: {}: {}", path, line, key, what)});
        } else {
            problems.push_back({0, fmt::format("{}: {}: {}", path, key, what)});
        }
    }
    int line_of(const std::string& key) const {
        auto it = values.find(key);
        return it == values.end() ? 0 : it->second.line;
    }
    bool is_set(const std::string& key) const { return values.count(key) != 0; }
};

constexpr std::array<std::pair<std::string_view, Action>, 3> kActions{{
    {"ignore", Action::Ignore}, {"enforce", Action::Enforce}, {"drop", Action::Drop}}};
constexpr std::array<std::pair<std::string_view, ProxyProtocol>, 4> kProxyProtocols{{
    {"off", ProxyProtocol::Off}, {"v1", ProxyProtocol::V1}, {"v2", ProxyProtocol::V2}, {"auto", ProxyProtocol::Auto}}};
constexpr std::array<std::pair<std::string_view, Handoff>, 4> kHandoffs{{
    {"proxy-v2", Handoff::ProxyV2}, {"proxy-v1", Handoff::ProxyV1}, {"xclient", Handoff::Xclient}, {"none", Handoff::None}}};
constexpr std::array<std::pair<std::string_view, CacheBackend>, 3> kCacheBackends{{
    {"lmdb", CacheBackend::Lmdb}, {"redis", CacheBackend::Redis}, {"memory", CacheBackend::Memory}}};
constexpr std::array<std::pair<std::string_view, BareLf>, 2> kBareLf{{
    {"reject", BareLf::Reject}, {"normalize", BareLf::Normalize}}};

// Longer than any sane timeout or TTL, short enough that adding it to a Unix time in
// milliseconds cannot overflow.
constexpr Millis kMaxDuration{3650LL * 86400 * 1000};

enum class Zero { Allowed, Refused };

// One key being applied: the helpers report problems under its name and line.
class KeyContext {
public:
    KeyContext(LoadState& state, std::string key, int line) : state_(state), key_(std::move(key)), line_(line) {}

    Config& cfg() { return state_.cfg; }
    const std::string& key() const { return key_; }
    int line() const { return line_; }

    void fail(std::string_view what) { state_.add(line_, key_, what); }
    // A problem located in another file (access.file, dnsbl.reply_map) sorts with this key.
    void fail_elsewhere(std::string text) { state_.problems.push_back({line_, std::move(text)}); }

    std::optional<bool> boolean(std::string_view v) {
        auto l = ascii_lower(v);
        if (l == "on" || l == "yes" || l == "true") return true;
        if (l == "off" || l == "no" || l == "false") return false;
        fail(quote(v) + " is not a yes/no value (use on, off, yes, no, true or false)");
        return std::nullopt;
    }

    std::optional<Millis> duration(std::string_view v, Zero zero) {
        auto d = parse_duration(v);
        if (!d) {
            fail(quote(v) + " is not a duration (use 6s, 2m, 1h)");
            return std::nullopt;
        }
        if (zero == Zero::Refused && d->count() == 0) {
            fail(quote(v) + " is zero, which would expire at once (use a positive duration such as 5s)");
            return std::nullopt;
        }
        if (*d > kMaxDuration) {
            fail(quote(v) + " is too long (use at most 3650d)");
            return std::nullopt;
        }
        return d;
    }

    std::optional<int> integer(std::string_view v, long long lo, long long hi) {
        long long n = 0;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        std::string range = lo == INT_MIN && hi == INT_MAX ? std::string("a whole number such as -1")
                            : hi == INT_MAX ? fmt::format("a whole number of at least {}", lo)
                            : lo == INT_MIN ? fmt::format("a whole number of at most {}", hi)
                                            : fmt::format("a whole number from {} to {}", lo, hi);
        if (v.empty() || ec == std::errc::invalid_argument || end != v.data() + v.size()) {
            fail(quote(v) + " is not a whole number (use " + range + ")");
            return std::nullopt;
        }
        if (ec == std::errc::result_out_of_range || n < lo || n > hi) {
            fail(quote(v) + " is out of range (use " + range + ")");
            return std::nullopt;
        }
        return static_cast<int>(n);
    }

    template <typename T, size_t N>
    std::optional<T> choice(std::string_view v, const std::array<std::pair<std::string_view, T>, N>& table,
                            std::string_view what) {
        auto l = ascii_lower(v);
        for (const auto& [name, value] : table) {
            if (l == name) return value;
        }
        std::string names;
        for (size_t i = 0; i < N; ++i) {
            names += i == 0 ? "" : i + 1 == N ? " or " : ", ";
            names += table[i].first;
        }
        fail(fmt::format("{} is not {} (use {})", quote(v), what, names));
        return std::nullopt;
    }

    std::optional<Action> action(std::string_view v) { return choice(v, kActions, "an action"); }

    // "ip:port"; with default_port a bare ip is accepted too. Port 0 is refused: it
    // means "any port" to bind(2) and "nothing" to connect(2).
    std::optional<Endpoint> endpoint(std::string_view v, std::optional<uint16_t> default_port) {
        auto e = Endpoint::parse(v, default_port);
        if (!e) {
            if (default_port) {
                fail(fmt::format("{} is not an address (use ip or ip:port, e.g. 192.0.2.1, 192.0.2.1:{} or [2001:db8::1]:{})",
                                 quote(v), *default_port, *default_port));
            } else {
                fail(quote(v) + " is not an ip:port (use e.g. 127.0.0.1:2525 or [::1]:2525)");
            }
            return std::nullopt;
        }
        if (e->port() == 0) {
            fail(quote(v) + " has port 0 (use a port from 1 to 65535)");
            return std::nullopt;
        }
        return e;
    }

    std::optional<std::vector<Endpoint>> endpoints(std::string_view v, std::optional<uint16_t> default_port) {
        std::vector<Endpoint> out;
        bool ok = true;
        for (auto item : split_list(v)) {
            auto e = endpoint(item, default_port);
            if (!e) {
                ok = false;
            } else if (std::find(out.begin(), out.end(), *e) != out.end()) {
                fail(quote(item) + " is listed twice (keep one)");
                ok = false;
            } else {
                out.push_back(*e);
            }
        }
        if (!ok) return std::nullopt;
        return out;
    }

    std::optional<std::vector<Cidr>> cidrs(std::string_view v) {
        std::vector<Cidr> out;
        bool ok = true;
        for (auto item : split_list(v)) {
            std::string why;
            auto c = Cidr::parse(item, &why);
            if (!c) {
                fail(why);
                ok = false;
            } else {
                out.push_back(*c);
            }
        }
        if (!ok) return std::nullopt;
        return out;
    }

    // Relative paths are taken from the current directory, like every other path
    // given to a daemon on its command line; the shipped INI says so.
    std::optional<std::string> file(std::string_view v) {
        std::string why;
        auto text = read_text_file(std::string(v), &why);
        if (!text) fail(fmt::format("cannot read {}: {} (fix the path or the file's permissions)", quote(v), why));
        return text;
    }

private:
    LoadState& state_;
    std::string key_;
    int line_;
};

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

bool user_exists(const std::string& name) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    return getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr;
}

const KeyDef kKeys[] = {
    {"listen", "address", [](KeyContext& c, std::string_view v) {
        auto list = c.endpoints(v, std::nullopt);
        if (list && list->empty()) c.fail("is empty (use at least one ip:port, e.g. 0.0.0.0:25)");
        else if (list) c.cfg().listen_addresses = *list;
    }},
    {"listen", "proxy_protocol", [](KeyContext& c, std::string_view v) {
        if (auto p = c.choice(v, kProxyProtocols, "a PROXY protocol mode")) c.cfg().proxy_protocol = *p;
    }},
    {"listen", "proxy_from", [](KeyContext& c, std::string_view v) {
        if (auto list = c.cidrs(v)) c.cfg().proxy_from = *list;
    }},
    {"listen", "proxy_timeout", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().proxy_timeout = *d;
    }},

    {"backend", "address", [](KeyContext& c, std::string_view v) {
        if (auto e = c.endpoint(v, std::nullopt)) c.cfg().backend_address = *e;
    }},
    {"backend", "handoff", [](KeyContext& c, std::string_view v) {
        if (auto h = c.choice(v, kHandoffs, "a handoff method")) c.cfg().handoff = *h;
    }},
    {"backend", "source_address", [](KeyContext& c, std::string_view v) {
        if (v.empty()) {
            c.cfg().backend_source_address.reset();
        } else if (auto e = Endpoint::parse_ip(v)) {
            c.cfg().backend_source_address = *e;
        } else {
            c.fail(quote(v) + " is not an IP address (use an address without a port, e.g. 127.0.0.25)");
        }
    }},
    {"backend", "connect_timeout", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().backend_connect_timeout = *d;
    }},
    {"backend", "idle_timeout", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().backend_idle_timeout = *d;
    }},
    {"backend", "i_know_this_is_an_open_relay", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().i_know_this_is_an_open_relay = *b;
    }},
    {"backend", "tls", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().backend_tls = *b;
    }},
    {"backend", "tls_ca", [](KeyContext& c, std::string_view v) {
        c.cfg().backend_tls_ca = std::string(v);
        if (!v.empty()) c.file(v);
    }},

    {"greet", "banner", [](KeyContext& c, std::string_view v) {
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
    }},
    {"greet", "wait", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().greet_wait = *d;
    }},
    {"greet", "action", [](KeyContext& c, std::string_view v) {
        if (auto a = c.action(v)) c.cfg().greet_action = *a;
    }},

    {"dnsbl", "sites", [](KeyContext& c, std::string_view v) {
        std::vector<std::string> errors;
        auto sites = parse_dnsbl_sites(v, &errors);
        for (const auto& e : errors) c.fail(e);
        // The sites as --print-config writes them back, so that its output loads to an
        // equal Config.
        std::string text;
        for (const auto& site : sites) text += (text.empty() ? "" : ", ") + site.text;
        c.cfg().dnsbl_sites_text = std::move(text);
        c.cfg().dnsbl_sites = std::move(sites);
    }},
    {"dnsbl", "threshold", [](KeyContext& c, std::string_view v) {
        if (auto n = c.integer(v, 1, INT_MAX)) c.cfg().dnsbl_threshold = *n;
    }},
    {"dnsbl", "allowlist_threshold", [](KeyContext& c, std::string_view v) {
        auto n = c.integer(v, INT_MIN, INT_MAX);
        if (n && *n > 0) {
            c.fail(quote(v) + " is positive (use 0 to turn the allowlist off, or a negative score such as -1)");
        } else if (n) {
            c.cfg().dnsbl_allowlist_threshold = *n;
        }
    }},
    {"dnsbl", "action", [](KeyContext& c, std::string_view v) {
        if (auto a = c.action(v)) c.cfg().dnsbl_action = *a;
    }},
    {"dnsbl", "timeout", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().dnsbl_timeout = *d;
    }},
    {"dnsbl", "servers", [](KeyContext& c, std::string_view v) {
        if (auto list = c.endpoints(v, uint16_t{53})) c.cfg().dnsbl_servers = *list;
    }},
    {"dnsbl", "reply_map", [](KeyContext& c, std::string_view v) {
        c.cfg().dnsbl_reply_map_file = std::string(v);
        if (v.empty()) return;
        if (auto text = c.file(v)) load_reply_map(c, std::string(v), *text);
    }},

    {"deep", "pipelining", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().deep_pipelining = *b;
    }},
    {"deep", "non_smtp_command", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().deep_non_smtp_command = *b;
    }},
    {"deep", "bare_newline", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().deep_bare_newline = *b;
    }},
    {"deep", "action", [](KeyContext& c, std::string_view v) {
        if (auto a = c.action(v)) c.cfg().deep_action = *a;
    }},
    {"deep", "forbidden_commands", [](KeyContext& c, std::string_view v) {
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
    }},

    {"access", "file", [](KeyContext& c, std::string_view v) {
        c.cfg().access_file = std::string(v);
        if (v.empty()) return;
        if (auto text = c.file(v)) load_access_file(c, std::string(v), *text);
    }},
    {"access", "action", [](KeyContext& c, std::string_view v) {
        if (auto a = c.action(v)) c.cfg().access_action = *a;
    }},

    {"cache", "backend", [](KeyContext& c, std::string_view v) {
        if (auto b = c.choice(v, kCacheBackends, "a cache backend")) c.cfg().cache_backend = *b;
    }},
    {"cache", "path", [](KeyContext& c, std::string_view v) { c.cfg().cache_path = std::string(v); }},
    {"cache", "redis", [](KeyContext& c, std::string_view v) {
        if (auto e = c.endpoint(v, uint16_t{6379})) c.cfg().cache_redis = *e;
    }},
    {"cache", "pregreet_ttl", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Allowed)) c.cfg().cache_pregreet_ttl = *d;
    }},
    {"cache", "dnsbl_min_ttl", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Allowed)) c.cfg().cache_dnsbl_min_ttl = *d;
    }},
    {"cache", "dnsbl_max_ttl", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Allowed)) c.cfg().cache_dnsbl_max_ttl = *d;
    }},
    {"cache", "deep_ttl", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Allowed)) c.cfg().cache_deep_ttl = *d;
    }},

    {"tls", "cert", [](KeyContext& c, std::string_view v) {
        c.cfg().tls_cert = credential_path(v);
        if (!v.empty()) c.file(c.cfg().tls_cert);
    }},
    {"tls", "key", [](KeyContext& c, std::string_view v) {
        c.cfg().tls_key = credential_path(v);
        if (!v.empty()) c.file(c.cfg().tls_key);
    }},
    {"tls", "ciphers", [](KeyContext& c, std::string_view v) { c.cfg().tls_ciphers = std::string(v); }},
    {"tls", "min_version", [](KeyContext& c, std::string_view v) {
        if (v != "1.2") {
            c.fail(quote(v) + " is not offered (use 1.2, the only version the packaged mbedTLS offers)");
            return;
        }
        c.cfg().tls_min_version = std::string(v);
    }},
    {"tls", "handshake_timeout", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().tls_handshake_timeout = *d;
    }},
    {"tls", "passthrough", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().tls_passthrough = *b;
    }},

    {"limits", "max_connections", [](KeyContext& c, std::string_view v) {
        if (auto n = c.integer(v, 1, INT_MAX)) c.cfg().max_connections = *n;
    }},
    {"limits", "per_client_connections", [](KeyContext& c, std::string_view v) {
        if (auto n = c.integer(v, 1, INT_MAX)) c.cfg().per_client_connections = *n;
    }},
    {"limits", "command_time_limit", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Refused)) c.cfg().command_time_limit = *d;
    }},
    {"limits", "command_count_limit", [](KeyContext& c, std::string_view v) {
        if (auto n = c.integer(v, 1, INT_MAX)) c.cfg().command_count_limit = *n;
    }},
    {"limits", "shutdown_grace", [](KeyContext& c, std::string_view v) {
        if (auto d = c.duration(v, Zero::Allowed)) c.cfg().shutdown_grace = *d;
    }},

    {"smuggling", "bare_lf", [](KeyContext& c, std::string_view v) {
        if (auto b = c.choice(v, kBareLf, "a bare LF policy")) c.cfg().smuggling_bare_lf = *b;
    }},

    {"log", "syslog", [](KeyContext& c, std::string_view v) {
        if (auto b = c.boolean(v)) c.cfg().log_syslog = *b;
    }},
    {"log", "syslog_name", [](KeyContext& c, std::string_view v) {
        if (!is_printable_word(v)) {
            c.fail(quote(v) + " is not a syslog tag (use one word without spaces, e.g. smtpscreen or postfix/postscreen)");
            return;
        }
        c.cfg().log_syslog_name = std::string(v);
    }},
    {"log", "stderr", [](KeyContext& c, std::string_view v) {
        // "auto" is the written form of the default (on in the foreground), so that
        // --print-config can say it and load its own output.
        if (ascii_lower(v) == "auto") {
            c.cfg().log_stderr.reset();
            return;
        }
        auto l = ascii_lower(v);
        if (l == "on" || l == "yes" || l == "true") c.cfg().log_stderr = true;
        else if (l == "off" || l == "no" || l == "false") c.cfg().log_stderr = false;
        else c.fail(quote(v) + " is not a yes/no value (use auto, on or off)");
    }},

    {"stats", "listen", [](KeyContext& c, std::string_view v) {
        if (v.empty()) c.cfg().stats_listen.reset();
        else if (auto e = c.endpoint(v, std::nullopt)) c.cfg().stats_listen = *e;
    }},

    {"process", "user", [](KeyContext& c, std::string_view v) {
        if (!v.empty() && !user_exists(std::string(v))) {
            c.fail(quote(v) + " is not a user on this host (create it, or fix the name)");
            return;
        }
        c.cfg().process_user = std::string(v);
    }},
    {"process", "threads", [](KeyContext& c, std::string_view v) {
        if (auto n = c.integer(v, 1, 64)) c.cfg().process_threads = *n;
    }},
};

const KeyDef* find_key(std::string_view section, std::string_view name) {
    for (const auto& k : kKeys) {
        if (k.section == section && k.name == name) return &k;
    }
    return nullptr;
}

bool known_section(std::string_view section) {
    return std::any_of(std::begin(kKeys), std::end(kKeys), [&](const KeyDef& k) { return k.section == section; });
}

std::string section_list() {
    std::string out;
    std::string_view last;
    for (const auto& k : kKeys) {
        if (k.section == last) continue;
        last = k.section;
        out += out.empty() ? "" : ", ";
        out += fmt::format("[{}]", k.section);
    }
    return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
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
    for (const auto& k : kKeys) {
        std::string full = fmt::format("{}.{}", k.section, k.name);
        size_t d = k.name == ascii_lower(name) ? 1 : edit_distance(wanted, full);
        if (d < best_distance) {
            best_distance = d;
            best = full;
        }
    }
    if (!best.empty()) return fmt::format("(did you mean {}?)", best);
    std::string keys;
    for (const auto& k : kKeys) {
        if (k.section != section) continue;
        keys += keys.empty() ? "" : ", ";
        keys += k.name;
    }
    return fmt::format("(the keys of [{}] are {})", section, keys);
}

// ---------------------------------------------------------------------------------
// Reading the INI text. libinih splits lines into section/key/value; our reader feeds
// it one line at a time, which gives the line numbers (Debian's inih has no
// INI_HANDLER_LINENO) and lets us report every malformed line, not only the first.
//
// Continuation lines work as in Postfix's main.cf and Python's configparser: an
// indented line right after a key line continues its value (joined with one space),
// so a long dnsbl.sites list can be wrapped. An indented line that reads as a key of
// the current section, or as a section header, is taken as such instead, because
// indenting keys is a common habit and never means a continuation.

struct IniPass {
    IniPass(LoadState& s, std::string_view text) : state(s), rest(text), finished(text.empty()) {}

    LoadState& state;
    std::string_view rest;
    bool finished;
    int line = 0;
    std::string section;
    bool section_valid = true;      // keys under an unknown section are skipped silently
    bool continuation_allowed = false;
    bool is_continuation = false;   // the line being handed to inih
    std::string last_key;           // key a continuation appends to ("" if refused)

    void error(std::string_view what) {
        state.problems.push_back({line, fmt::format("{}:{}: {}", state.path, line, what)});
    }

    static bool looks_like_section(std::string_view body) {
        if (body.empty() || body.front() != '[') return false;
        size_t close = body.find(']');
        if (close == std::string_view::npos) return false;
        auto after = trim(body.substr(close + 1));
        auto name = trim(body.substr(1, close - 1));
        bool word = !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
            return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        });
        return word && (after.empty() || after.front() == ';' || after.front() == '#');
    }

    static bool looks_like_key(std::string_view section, std::string_view body) {
        size_t eq = body.find('=');
        return eq != std::string_view::npos && find_key(section, trim(body.substr(0, eq))) != nullptr;
    }

    std::string section_line(std::string_view body) {
        size_t close = body.find(']');
        if (close == std::string_view::npos) {
            error(fmt::format("{} is an unterminated section header (use [name])", quote(body)));
            section_valid = false;
            section.clear();
            return "#";
        }
        auto after = trim(body.substr(close + 1));
        if (!after.empty() && after.front() != ';' && after.front() != '#') {
            error(fmt::format("text after the section header {} (put each key = value on a line of its own)",
                              quote(body.substr(0, close + 1))));
        }
        section = std::string(trim(body.substr(1, close - 1)));
        section_valid = known_section(section);
        if (!section_valid) {
            error(fmt::format("[{}]: unknown section (use one of {})", section, section_list()));
        }
        return "[" + section + "]";
    }

    std::string key_line(std::string_view body) {
        size_t eq = body.find('=');
        size_t colon = body.find(':');
        // inih also splits on ':'; only "key = value" is documented, and a stray colon
        // is more often a forgotten '=' before an ip:port.
        if (eq == std::string_view::npos || (colon != std::string_view::npos && colon < eq)) {
            error(fmt::format("{} is not a setting (use key = value)", quote(body)));
            return "#";
        }
        if (trim(body.substr(0, eq)).empty()) {
            error(fmt::format("{} has no key name (use key = value)", quote(body)));
            return "#";
        }
        continuation_allowed = true;
        return std::string(body);
    }

    // What inih should see for one line of the file.
    std::string translate(std::string_view raw, int max_line) {
        if (line == 1 && raw.substr(0, 3) == "\xEF\xBB\xBF") raw.remove_prefix(3);
        if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
        is_continuation = false;
        auto body = raw.substr(std::min(raw.find_first_not_of(" \t"), raw.size()));
        bool indented = body.size() != raw.size();
        if (body.empty() || body.front() == ';' || body.front() == '#') {
            continuation_allowed = false;
            return body.empty() ? "" : "#";
        }
        // inih's line buffer is fixed (200 bytes in Debian's build); a longer line
        // would be split silently into two, so refuse it with a way out. print_config
        // wraps its lines to the same length.
        size_t limit = std::min(kIniMaxLine, static_cast<size_t>(std::max(max_line, 2)) - 2);
        if (raw.size() > limit) {
            error(fmt::format("line is longer than {} characters (wrap a long value onto indented continuation lines)",
                              limit));
            continuation_allowed = false;
            return "#";
        }
        if (indented && continuation_allowed && !looks_like_section(body) && !looks_like_key(section, body)) {
            is_continuation = true;
            return std::string(raw);
        }
        continuation_allowed = false;
        if (body.front() == '[') return section_line(body);
        return key_line(body);
    }
};

char* read_ini_line(char* str, int num, void* stream) {
    auto& pass = *static_cast<IniPass*>(stream);
    if (pass.finished) return nullptr;
    size_t nl = pass.rest.find('\n');
    auto raw = pass.rest.substr(0, nl);
    pass.rest = nl == std::string_view::npos ? std::string_view{} : pass.rest.substr(nl + 1);
    pass.finished = pass.rest.empty();
    ++pass.line;
    std::string out = pass.translate(raw, num) + "\n";
    std::memcpy(str, out.c_str(), out.size() + 1);  // translate() kept it below num
    return str;
}

int on_ini_value(void* user, const char* section, const char* name, const char* value) {
    auto& pass = *static_cast<IniPass*>(user);
    if (!pass.section_valid) return 1;
    auto& values = pass.state.values;
    if (pass.is_continuation) {
        if (!pass.last_key.empty()) {
            auto& raw = values[pass.last_key].value;
            raw += raw.empty() ? "" : " ";
            raw += value;
        }
        return 1;
    }
    pass.last_key.clear();
    std::string_view sec = section;
    std::string_view key = name;
    if (sec.empty()) {
        pass.error(fmt::format("{}: the key is outside any section (put it under its [section] header)", key));
        return 1;
    }
    std::string full = fmt::format("{}.{}", sec, key);
    if (find_key(sec, key) == nullptr) {
        pass.error(fmt::format("{}: unknown key {}", full, unknown_key_hint(sec, key)));
        return 1;
    }
    // "key = ;x" would read back as an empty value (a ';' after white space starts a
    // comment), so --print-config could not reproduce it: refuse it here.
    if (value[0] == ';' || value[0] == '#') {
        pass.error(fmt::format("{}: the value starts with '{}', which reads as a comment (remove it)", full, value[0]));
        return 1;
    }
    if (auto it = values.find(full); it != values.end()) {
        pass.error(fmt::format("{}: is set twice, first on line {} (keep one)", full, it->second.line));
        return 1;
    }
    values.emplace(full, RawValue{value, pass.line});
    pass.last_key = full;
    return 1;
}

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
    if (c.tls_cert.empty() != c.tls_key.empty()) {
        std::string key = c.tls_cert.empty() ? "tls.key" : "tls.cert";
        s.add(s.line_of(key), key,
              fmt::format("is set but {} is not (set both to offer STARTTLS, or neither)",
                          c.tls_cert.empty() ? "tls.cert" : "tls.key"));
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
    for (const auto& v : printed_values(s.cfg)) {
        std::string key = fmt::format("{}.{}", v.section, v.key);
        if (!s.is_set(key) || ini_key_lines(v.section, v.key, v.value)) continue;
        s.add(s.line_of(key), key,
              fmt::format("holds a word that --print-config cannot write back on lines of at most {} characters "
                          "(shorten the word, or put a space in it)",
                          kIniMaxLine));
    }
}

}  // namespace

static_assert(INI_MAX_LINE - 2 == kIniMaxLine, "kIniMaxLine is inih's line buffer less newline and NUL");

bool ini_piece_reads_back(std::string_view piece) {
    // As inih reads a value: isspace() trims both ends, ';' after white space starts a
    // comment; on_ini_value refuses a value that starts like a comment.
    auto space = [](char ch) { return std::isspace(static_cast<unsigned char>(ch)) != 0; };
    if (piece.empty()) return true;
    if (space(piece.front()) || space(piece.back()) || piece.front() == ';' || piece.front() == '#') return false;
    for (size_t i = 1; i < piece.size(); ++i) {
        if (piece[i] == ';' && space(piece[i - 1])) return false;
        if (piece[i] == '\n' || piece[i] == '\0') return false;
    }
    return true;
}

bool ini_line_continues(std::string_view section, std::string_view text) {
    return !text.empty() && text.front() != ';' && text.front() != '#' && !IniPass::looks_like_section(text) &&
           !IniPass::looks_like_key(section, text);
}

std::string expand_banner(const std::string& banner_template) {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
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
    cfg->banner = expand_banner(cfg->banner_template);

    std::string why;
    auto text = read_text_file(path, &why);
    if (!text) {
        errors.push_back(fmt::format("{}: cannot read the configuration: {} (check the path given with -c)", path, why));
        return cfg;
    }

    LoadState state{path, *cfg, {}, {}};
    IniPass pass(state, *text);
    ini_parse_stream(read_ini_line, &pass, on_ini_value, &pass);

    for (const auto& def : kKeys) {
        std::string full = fmt::format("{}.{}", def.section, def.name);
        auto it = state.values.find(full);
        if (it == state.values.end()) continue;
        KeyContext ctx(state, full, it->second.line);
        def.apply(ctx, trim(it->second.value));
    }
    check_combinations(state);
    cfg->banner = expand_banner(cfg->banner_template);
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
    if (c.stats_listen) {
        warn("stats.listen", "the Prometheus /metrics endpoint is not built into this version yet; nothing listens there");
    }
    if (c.cache_backend == CacheBackend::Redis) {
        warn("cache.backend", "redis is not built into this version yet; smtpscreen will refuse to start (use lmdb)");
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
