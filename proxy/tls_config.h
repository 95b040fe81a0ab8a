#pragma once
#include <string>
#include <vector>

#include "core/config.h"

namespace smtpscreen {

// Loads tls.cert/tls.key (and the backend leg's CA when backend.tls = on) into config.
// Every problem is appended to errors, naming the key and the file, as load_config does;
// warnings (an expired certificate, a short RSA key) go to warnings.
void load_tls_contexts(Config& config, std::vector<std::string>& errors, std::vector<std::string>& warnings);

}  // namespace smtpscreen
