#pragma once
// The process: binds every listener (before dropping root), starts one worker loop per
// process.threads, and turns signals into a graceful stop.
#include <memory>

#include "core/config.h"
#include "core/log.h"

namespace smtpscreen {

// Runs until SIGTERM/SIGINT and the shutdown grace are over. Returns the exit code;
// startup failures are logged with what to do about them.
int run_server(std::shared_ptr<const Config> config, Logger& log);

}  // namespace smtpscreen
