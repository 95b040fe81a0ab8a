#pragma once
// The end-of-run outputs: a table for people, JSON for scripts.
#include <string>

#include "bench/options.h"
#include "bench/stats.h"

namespace smtpload {

// smtpload's own CPU time, so that a reader can tell when the load generator, not the
// server, was the limit.
struct CpuTime {
    double user_s = 0;
    double sys_s = 0;
};
CpuTime own_cpu_time();

// elapsed_s: run start to the end of the last session (the rate's denominator).
std::string format_table(const Options& options, const RunStats& stats, double elapsed_s, CpuTime cpu);
std::string format_json(const Options& options, const RunStats& stats, double elapsed_s, CpuTime cpu);

}  // namespace smtpload
