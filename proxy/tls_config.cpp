#include "proxy/tls_config.h"

#include "proxy/tls_context.h"

namespace smtpscreen {

std::shared_ptr<const TlsContexts> load_tls_contexts(const Config& config, std::vector<std::string>& errors,
                                                     std::vector<std::string>& warnings) {
    auto tls = std::make_shared<TlsContexts>();
    if (!config.tls_cert.empty() && !config.tls_key.empty()) {
        std::string error;
        auto server = TlsServerContext::load(config.tls_cert, config.tls_key, config.tls_ciphers,
                                             config.tls_ticket_key_file, &error);
        if (!server) {
            errors.push_back(config.source_file + ": tls: " + error);
        } else {
            for (const auto& w : server->warnings()) warnings.push_back(config.source_file + ": tls: " + w);
            tls->server = std::move(server);
        }
    }
    if (config.backend_tls) {
        std::string error;
        auto client = TlsClientContext::load(config.backend_tls_ca, config.tls_ciphers, &error);
        if (!client) errors.push_back(config.source_file + ": backend.tls: " + error);
        else tls->backend = std::move(client);
    }
    return tls;
}

}  // namespace smtpscreen
