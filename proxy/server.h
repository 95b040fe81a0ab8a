#pragma once
// The process: binds every listener (before dropping root), starts one worker loop per
// process.threads, and turns signals into a graceful stop.
#include <memory>
#include <string>

#include "config/config.h"
#include "core/log.h"
#include "proxy/tls_config.h"

namespace smtpscreen {

// Runs until SIGTERM/SIGINT and the shutdown grace are over. Returns the exit code;
// startup failures are logged with what to do about them.
// config_path is read again on SIGHUP; tls was built from config.
int run_server(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls,
               const std::string& config_path, Logger& log);

}  // namespace smtpscreen
