#pragma once
// What the proxy builds from a Config's tls.* and backend.tls* keys, at start and at
// every reload: runtime objects, kept apart from the parsed configuration. Sessions
// hold the contexts they started with, so a reload never changes a certificate under
// a handshake in progress.
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace smtpscreen {

class TlsServerContext;
class TlsClientContext;

struct TlsContexts {
    std::shared_ptr<const TlsServerContext> server;   // null: no STARTTLS offered to clients
    std::shared_ptr<const TlsClientContext> backend;  // backend.tls = on
};

// Loads tls.cert/tls.key (and the backend leg's CA when backend.tls = on). Every problem
// is appended to errors, naming the key and the file, as load_config does; warnings (an
// expired certificate, a short RSA key) go to warnings.
std::shared_ptr<const TlsContexts> load_tls_contexts(const Config& config, std::vector<std::string>& errors,
                                                     std::vector<std::string>& warnings);

}  // namespace smtpscreen
