#pragma once
// `smtpscreen -c FILE cache list|show IP|delete IP|flush|stats`: read or change the
// verdict cache beside a running daemon (README, "Cache tools"). An lmdb file is opened
// a second time, which LMDB allows across processes; a change is seen by the daemon's
// next lookup, so a deleted client gets the greet wait on its next connection.
#include <string>
#include <vector>

#include "config/config.h"

namespace smtpscreen {

// args: what follows "cache" on the command line. Prints to stdout, errors to stderr;
// returns the exit status (0 done, 1 not found or failed, 2 usage).
int run_cache_command(const Config& config, const std::string& config_path, const std::vector<std::string>& args);

}  // namespace smtpscreen
