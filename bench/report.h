#pragma once
// The end-of-run outputs: a table for people, JSON for scripts.
#include <string>

#include "bench/options.h"
#include "bench/stats.h"

namespace smtpload {

// elapsed_s: run start to the end of the last session (the rate's denominator).
std::string format_table(const Options& options, const RunStats& stats, double elapsed_s);
std::string format_json(const Options& options, const RunStats& stats, double elapsed_s);

}  // namespace smtpload
