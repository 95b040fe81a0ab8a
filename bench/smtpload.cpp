// smtpload: an SMTP load generator for smtpscreen's bench (bench/README.md). It plays clean
// clients, pregreet bots, DNSBL-listed clients, idle holders and slow talkers from
// source addresses spread over 127.0.0.0/8, and reports rate, latency, reply codes and
// errors. See bench/README.md.
#include <fmt/format.h>
#include <sys/resource.h>

#include <atomic>
#include <memory>
#include <optional>
#include <csignal>
#include <cstdio>
#include <thread>
#include <vector>

#include "bench/message.h"
#include "bench/options.h"
#include "bench/progress.h"
#include "bench/progress_reporter.h"
#include "bench/report.h"
#include "bench/tls_client.h"
#include "bench/worker.h"

namespace {

using namespace smtpload;

// Idle holders need one descriptor each: take the hard limit rather than make the user
// remember `ulimit -n` (raising the hard limit itself is the user's call).
void raise_fd_limit(const Options& options) {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    auto wanted = static_cast<rlim_t>(options.concurrency) + 64;
    if (lim.rlim_cur < wanted) {
        std::fprintf(stderr, "smtpload: warning: %d sessions need about %llu descriptors, the limit is %llu\n",
                     options.concurrency, static_cast<unsigned long long>(wanted),
                     static_cast<unsigned long long>(lim.rlim_cur));
    }
}

bool write_file(const std::string& path, const std::string& text) {
    if (path == "-") return std::fputs(text.c_str(), stdout) >= 0;
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return false;
    bool ok = std::fputs(text.c_str(), f) >= 0;
    return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
    ParsedOptions parsed = parse_options(argc, argv);
    if (!parsed.options) return parsed.exit_code;
    const Options& options = *parsed.options;

    std::signal(SIGPIPE, SIG_IGN);  // a server that closes mid-write is an error to count, not a death
    raise_fd_limit(options);

    bool talks = options.mix.weight(Role::Clean) + options.mix.weight(Role::Dnsbl) + options.mix.weight(Role::Slow) > 0;
    const std::string message =
        talks ? build_message(options.message_size, options.mail_from, options.rcpt_to) : std::string(".\r\n");

    std::unique_ptr<TlsContext> tls;
    if (options.mix.weight(Role::Starttls) + options.mix.weight(Role::Tls) > 0) {
        std::string error;
        tls = TlsContext::create(options, error);
        if (!tls) {
            std::fprintf(stderr, "smtpload: %s\n", error.c_str());
            return 2;
        }
    }

    Progress progress(options.sessions);
    const Clock::time_point start = Clock::now();
    std::vector<RunStats> results(static_cast<size_t>(options.threads));
    std::vector<double> waits(static_cast<size_t>(options.threads));
    std::atomic<int> running(options.threads);
    std::vector<std::thread> threads;
    for (int i = 0; i < options.threads; ++i) {
        threads.emplace_back([&, i] {
            // Each loop is created, run and closed on its own thread.
            Worker worker(i, options.threads, options, message, progress, start, tls.get());
            worker.run();
            results[static_cast<size_t>(i)] = worker.stats();
            waits[static_cast<size_t>(i)] = thread_runq_wait_s();
            running.fetch_sub(1);
        });
    }
    {
        ProgressReporter reporter(progress, running, options.quiet);
        reporter.run();
    }
    for (auto& t : threads) t.join();

    RunStats stats;
    for (const RunStats& r : results) stats.merge(r);
    double elapsed = stats.last_end_s > 0 ? stats.last_end_s : std::chrono::duration<double>(Clock::now() - start).count();

    CpuTime cpu = own_cpu_time();
    for (double w : waits) cpu.runq_wait_s += w;
    std::optional<TlsFirstHandshake> tls_first;
    if (tls) tls_first = tls->first();
    if (!options.quiet) std::fputs(format_table(options, stats, elapsed, cpu, tls_first).c_str(), stdout);
    if (!options.json_path.empty() &&
        !write_file(options.json_path, format_json(options, stats, elapsed, cpu, tls_first))) {
        std::fprintf(stderr, "smtpload: cannot write %s\n", options.json_path.c_str());
        return 1;
    }
    RoleStats total = stats.total();
    // Exit 1 when nothing worked at all (target down, no address to bind): scripts
    // should not plot a run of pure connect errors as a result.
    return total.sessions > 0 && total.error_total() == total.sessions ? 1 : 0;
}
