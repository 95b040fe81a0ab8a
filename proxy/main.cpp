// smtpscreen: a pre-queue SMTP screening proxy in the style of Postfix's postscreen(8).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>

#include "cache/redis_blocking.h"
#include "config/config.h"
#include "config/from_postconf.h"
#include "core/log.h"
#include "proxy/cache_command.h"
#include "proxy/privileges.h"
#include "proxy/server.h"
#include "proxy/tls_config.h"

namespace {

constexpr const char* kDefaultConfig = "/etc/smtpscreen/smtpscreen.ini";

constexpr const char* kUsage =
    "usage: smtpscreen [-c FILE] [--check | --print-config]\n"
    "       smtpscreen [-c FILE] cache list | show IP | delete IP | flush | stats\n"
    "       smtpscreen --from-postconf < postconf-n-output\n"
    "       smtpscreen --list-keys | --version | --help\n"
    "\n"
    "  -c FILE          the INI configuration (default /etc/smtpscreen/smtpscreen.ini;\n"
    "                   every key is in smtpscreen.ini(5))\n"
    "  --check          validate FILE, print every error, exit 1 if there is one; run as\n"
    "                   root, also warn about files process.user could not read\n"
    "  --print-config   print the effective configuration, defaults included\n"
    "  --list-keys      print every key: section.key, its default and what it is\n"
    "  --from-postconf  read postscreen's settings (the output of `postconf -n`) on\n"
    "                   standard input and write them as smtpscreen's INI on standard\n"
    "                   output; each parameter it cannot map is a comment naming it\n"
    "  cache ...        list, show, delete or flush the verdict cache (lmdb, redis) or\n"
    "                   count its records, also while the daemon runs\n"
    "\n"
    "Runs in the foreground (under systemd: Type=notify, socket activation).\n"
    "Signals:\n"
    "  SIGHUP           reload FILE and the files it names (access list, reply map,\n"
    "                   certificate, key); sessions in progress keep their settings;\n"
    "                   a file with errors is refused and the old settings stay\n"
    "  SIGTERM, SIGINT  stop accepting and let sessions finish for up to\n"
    "                   limits.shutdown_grace; a second one closes them at once\n"
    "See smtpscreen(8).\n";

// Run as root with process.user set, --check tries each file SIGHUP re-reads as that
// user: a reload happens after root is gone.
std::vector<std::string> unreadable_after_drop(const smtpscreen::Config& config, const std::string& config_path) {
    std::vector<std::string> warnings;
    if (config.process_user.empty() || ::geteuid() != 0) return warnings;
    try {
        for (const auto& f : smtpscreen::files_unreadable_by(config.process_user,
                                                             smtpscreen::reloaded_files(config, config_path))) {
            warnings.push_back(fmt::format(
                "{} (process.user \"{}\" cannot read it, so SIGHUP would fail: make it readable by that user or "
                "one of its groups, e.g. ssl-cert for keys, or pass it with systemd's LoadCredential=)",
                f, config.process_user));
        }
    } catch (const std::exception& e) {
        warnings.push_back(e.what());
    }
    return warnings;
}

// With cache.backend = redis, --check asks Redis once (a blocking probe is fine here,
// there is no session to delay). Only a warning: smtpscreen starts without Redis and
// treats every lookup as a miss until it is back.
std::optional<std::string> redis_unreachable(const smtpscreen::Config& config) {
    if (config.cache_backend != smtpscreen::CacheBackend::Redis) return std::nullopt;
    auto why = smtpscreen::probe_redis(config.redis_settings(), std::chrono::seconds(2));
    if (!why) return std::nullopt;
    return fmt::format("cache.backend = redis: {}; smtpscreen starts anyway and carries on without the cache "
                       "(every client is screened) until Redis answers",
                       *why);
}

// postconf -n on stdin, the INI on stdout.
int from_postconf() {
    std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (text.find("postscreen_") == std::string::npos) {
        std::fputs("smtpscreen: no postscreen_* parameter on standard input; the INI below carries postscreen's "
                   "defaults only (pipe in the output of `postconf -n`, or `postconf -c DIR -n`)\n",
                   stderr);
    }
    std::fputs(smtpscreen::ini_from_postconf(text).c_str(), stdout);
    return std::ferror(stdout) != 0 ? 1 : 0;
}

int usage_error(const char* what) {
    std::fprintf(stderr, "smtpscreen: %s\n%s", what, kUsage);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string config_path;
    bool check = false;
    bool print = false;
    bool cache_command = false;
    std::vector<std::string> cache_args;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-c" || arg == "--config") {
            if (i + 1 >= argc) return usage_error("-c needs a file name");
            config_path = argv[++i];
        } else if (arg == "--check") {
            check = true;
        } else if (arg == "--print-config") {
            print = true;
        } else if (arg == "--list-keys") {
            std::fputs(smtpscreen::list_config_keys().c_str(), stdout);
            return 0;
        } else if (arg == "--from-postconf") {
            return from_postconf();
        } else if (arg == "cache") {
            cache_args.assign(argv + i + 1, argv + argc);
            cache_command = true;
            break;
        } else if (arg == "--version") {
            std::printf("smtpscreen %s\n", SMTPSCREEN_VERSION);
            return 0;
        } else if (arg == "--help" || arg == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else {
            return usage_error(fmt::format("unknown argument \"{}\"", arg).c_str());
        }
    }
    if (config_path.empty()) config_path = kDefaultConfig;

    std::vector<std::string> errors;
    std::vector<std::string> tls_warnings;
    auto config = smtpscreen::load_config(config_path, errors);
    // The cache tools need no certificate: a key only the daemon's user can read must
    // not stop them.
    if (cache_command && config && errors.empty()) return smtpscreen::run_cache_command(*config, config_path, cache_args);
    std::shared_ptr<const smtpscreen::TlsContexts> tls;
    if (config && errors.empty()) tls = smtpscreen::load_tls_contexts(*config, errors, tls_warnings);
    if (!errors.empty() || !config) {
        for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
        std::fprintf(stderr, "smtpscreen: %zu error%s in %s\n", errors.size(), errors.size() == 1 ? "" : "s",
                     config_path.c_str());
        return 1;
    }
    if (check) {
        for (const auto& w : smtpscreen::config_warnings(*config)) std::fprintf(stderr, "warning: %s\n", w.c_str());
        for (const auto& w : tls_warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
        for (const auto& w : unreadable_after_drop(*config, config_path)) std::fprintf(stderr, "warning: %s\n", w.c_str());
        if (auto w = redis_unreachable(*config)) std::fprintf(stderr, "warning: %s\n", w->c_str());
        std::printf("%s: OK\n", config_path.c_str());
        return 0;
    }
    if (print) {
        std::fputs(smtpscreen::print_config(*config).c_str(), stdout);
        return 0;
    }

    // smtpscreen always runs in the foreground (under systemd or a supervisor), so stderr
    // logging defaults to on, except into the journal that syslog already reaches.
    smtpscreen::Logger log(config->log_syslog, config->log_syslog_name,
                           config->log_stderr.value_or(smtpscreen::stderr_logging_for_auto(config->log_syslog)));
    for (const auto& w : smtpscreen::config_warnings(*config)) log.warn("{}", w);
    for (const auto& w : tls_warnings) log.warn("{}", w);
    // Said at start, not at the first SIGHUP that fails on it.
    for (const auto& w : unreadable_after_drop(*config, config_path)) log.warn("{}", w);
    return smtpscreen::run_server(config, tls, config_path, log);
}
