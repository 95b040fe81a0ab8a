#pragma once
// The end-of-run outputs: a table for people, JSON for scripts.
#include <optional>
#include <string>

#include "bench/options.h"
#include "bench/stats.h"
#include "bench/tls_client.h"

namespace smtpload {

// smtpload's own CPU time, so that a reader can tell when the load generator, not the
// server, was the limit.
struct CpuTime {
    double user_s = 0;
    double sys_s = 0;
    // The loop threads' time runnable but kept off a core (schedstat): the latencies
    // measured include it, and on cores shared with the server it is the server's doing.
    double runq_wait_s = 0;
};
// This thread's wait for a core so far (/proc/thread-self/schedstat), 0 when unknown.
double thread_runq_wait_s();
CpuTime own_cpu_time();

// elapsed_s: run start to the end of the last session (the rate's denominator).
// tls_first: what the run's first TLS handshake negotiated (set when a role speaks TLS).
std::string format_table(const Options& options, const RunStats& stats, double elapsed_s, CpuTime cpu,
                         const std::optional<TlsFirstHandshake>& tls_first);
std::string format_json(const Options& options, const RunStats& stats, double elapsed_s, CpuTime cpu,
                        const std::optional<TlsFirstHandshake>& tls_first);

}  // namespace smtpload
