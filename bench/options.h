#pragma once
// smtpload's command line.
#include <netinet/in.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "bench/role.h"
#include "bench/source_pool.h"

namespace smtpload {

using Millis = std::chrono::milliseconds;

struct Options {
    sockaddr_in target{};
    std::string target_text = "127.0.0.1:2525";
    int concurrency = 50;
    int64_t sessions = 10000;
    Millis duration{30000};
    Mix mix = Mix::only(Role::Clean);
    size_t message_size = 1024;
    Millis timeout{10000};
    std::optional<Millis> hold;  // idle role: unset holds until the run ends
    Millis slow_delay{10};
    int threads = 1;
    double rate = 0;  // sessions started per second at most; 0: as fast as slots free up
    std::string json_path;
    bool quiet = false;
    std::array<std::string, kRoleCount> source_specs;
    std::array<SourcePool, kRoleCount> sources;
    std::string helo = "load.bench.test";
    std::string mail_from = "bench@load.bench.test";
    std::string rcpt_to = "sink@sink.bench.test";
    // The starttls and tls roles (TLS 1.2 only; see bench/tls_client.h).
    bool tls_resume = false;  // offer the loop's first session (its ticket) on every later handshake
    std::string tls_ciphers = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256";
    std::string tls_groups = "X25519:P-256";  // P-256 too: in TLS 1.2 it also bounds an ECDSA certificate's curve
};

struct ParsedOptions {
    std::optional<Options> options;  // set when smtpload should run
    int exit_code = 0;               // otherwise: 0 after --help, 2 on a usage error
};

ParsedOptions parse_options(int argc, char** argv);

// "30s", "500ms", "2m", "1h", or a bare number of seconds.
std::optional<Millis> parse_duration(std::string_view text);
// "1024", "1k", "10m" (k = 1024).
std::optional<size_t> parse_size(std::string_view text);

}  // namespace smtpload
