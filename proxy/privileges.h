#pragma once
// Leaving root after the listeners are bound: the uid, the primary group and the
// supplementary groups of process.user (so that a key readable through Debian's
// ssl-cert group stays readable on SIGHUP), and of all capabilities only
// CAP_NET_BIND_SERVICE, so that a reload can still open a new port below 1024.
#include <string>
#include <vector>

#include "config/config.h"

namespace smtpscreen {

// Becomes `user` (no-op when empty, or when the process already runs as that user, as
// under systemd's User=). Throws std::runtime_error naming what failed and what to do.
// Must run before any other thread starts: capabilities are per thread.
void drop_privileges(const std::string& user);

// Every file SIGHUP reads again: the INI itself, access.file, dnsbl.reply_map, tls.cert,
// tls.key and backend.tls_ca; only those that are set.
std::vector<std::string> reloaded_files(const Config& config, const std::string& config_path);

// For --check run as root: the files of `paths` that `user` (with its groups) could not
// open for reading, each as "PATH: reason". Tried for real in a child process that
// becomes the user, so group modes, ACLs and directory permissions all count.
std::vector<std::string> files_unreadable_by(const std::string& user, const std::vector<std::string>& paths);

}  // namespace smtpscreen
