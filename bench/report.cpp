#include "bench/report.h"

#include <cstdio>
#include <fmt/format.h>
#include <sys/resource.h>

namespace smtpload {
namespace {

std::string reply_key(int code) { return code == 0 ? std::string("none") : fmt::format("{:03d}", code); }

std::string replies_text(const RoleStats& r) {
    std::string out;
    for (const auto& [code, n] : r.replies) {
        if (!out.empty()) out += ' ';
        out += fmt::format("{}:{}", reply_key(code), n);
    }
    return out.empty() ? "-" : out;
}

std::string errors_text(const RoleStats& r) {
    std::string out;
    for (size_t i = 0; i < kErrorKinds; ++i) {
        if (r.errors[i] == 0) continue;
        if (!out.empty()) out += ' ';
        out += fmt::format("{}:{}", error_name(static_cast<ErrorKind>(i)), r.errors[i]);
    }
    return out.empty() ? "0" : out;
}

double rate(uint64_t n, double elapsed_s) { return elapsed_s > 0 ? static_cast<double>(n) / elapsed_s : 0; }

void table_row(std::string& out, std::string_view name, const RoleStats& r, double elapsed_s) {
    out += fmt::format("{:<9} {:>9} {:>9} {:>10.1f} {:>9.2f} {:>9.2f} {:>9.2f}  {:<22} {}\n", name, r.sessions, r.ok,
                       rate(r.sessions, elapsed_s), r.latency.percentile_ms(50), r.latency.percentile_ms(99),
                       r.latency.max_ms(), replies_text(r), errors_text(r));
}

void json_role(std::string& out, const RoleStats& r, double elapsed_s, std::string_view indent) {
    out += fmt::format("{}\"sessions\": {},\n", indent, r.sessions);
    out += fmt::format("{}\"ok\": {},\n", indent, r.ok);
    out += fmt::format("{}\"sessions_per_s\": {:.2f},\n", indent, rate(r.sessions, elapsed_s));
    out += fmt::format(
        "{}\"latency_ms\": {{\"p50\": {:.3f}, \"p90\": {:.3f}, \"p99\": {:.3f}, \"max\": {:.3f}, \"mean\": {:.3f}}},\n",
        indent, r.latency.percentile_ms(50), r.latency.percentile_ms(90), r.latency.percentile_ms(99),
        r.latency.max_ms(), r.latency.mean_ms());
    out += fmt::format("{}\"replies\": {{", indent);
    bool first = true;
    for (const auto& [code, n] : r.replies) {
        out += fmt::format("{}\"{}\": {}", first ? "" : ", ", reply_key(code), n);
        first = false;
    }
    out += "},\n";
    out += fmt::format("{}\"errors\": {{", indent);
    for (size_t i = 0; i < kErrorKinds; ++i) {
        out += fmt::format("{}\"{}\": {}", i ? ", " : "", error_name(static_cast<ErrorKind>(i)), r.errors[i]);
    }
    out += "},\n";
    out += fmt::format("{}\"tls_handshakes\": {},\n{}\"tls_resumed\": {},\n", indent, r.tls_handshakes, indent,
                       r.tls_resumed);
    out += fmt::format("{}\"bytes_sent\": {}", indent, r.bytes_sent);
}

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        out += c;
    }
    return out + "\"";
}

double seconds(const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; }

}  // namespace

CpuTime own_cpu_time() {
    rusage ru{};
    if (getrusage(RUSAGE_SELF, &ru) != 0) return {};
    return {seconds(ru.ru_utime), seconds(ru.ru_stime)};
}

double thread_runq_wait_s() {
    std::FILE* f = std::fopen("/proc/thread-self/schedstat", "r");
    if (f == nullptr) return 0;
    unsigned long long run_ns = 0, wait_ns = 0;
    const int n = std::fscanf(f, "%llu %llu", &run_ns, &wait_ns);
    std::fclose(f);
    return n == 2 ? static_cast<double>(wait_ns) / 1e9 : 0;
}

std::string format_table(const Options& options, const RunStats& stats, double elapsed_s, CpuTime cpu,
                         const std::optional<TlsFirstHandshake>& tls_first) {
    std::string out;
    out += fmt::format("{:<9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}  {:<22} {}\n", "role", "sessions", "ok",
                       "sessions/s", "p50 ms", "p99 ms", "max ms", "replies", "errors");
    for (Role role : kAllRoles) {
        const RoleStats& r = stats.roles[index_of(role)];
        if (r.sessions == 0 && options.mix.weight(role) == 0) continue;
        table_row(out, role_name(role), r, elapsed_s);
    }
    table_row(out, "total", stats.total(), elapsed_s);
    out += fmt::format("target {}, concurrency {}, threads {}, mix {}, {:.2f} s, source retries {}, "
                       "smtpload CPU {:.2f} s user + {:.2f} s sys\n",
                       options.target_text, options.concurrency, options.threads, options.mix.describe(), elapsed_s,
                       stats.source_retries, cpu.user_s, cpu.sys_s);
    if (tls_first) {
        const RoleStats t = stats.total();
        out += fmt::format("TLS: {} handshakes, {} resumed; first: {} {} {}{}\n", t.tls_handshakes, t.tls_resumed,
                           tls_first->version, tls_first->cipher, tls_first->group,
                           options.tls_resume ? "" : " (no resumption offered)");
    }
    return out;
}

std::string format_json(const Options& options, const RunStats& stats, double elapsed_s, CpuTime cpu,
                        const std::optional<TlsFirstHandshake>& tls_first) {
    std::string out = "{\n";
    out += fmt::format("  \"target\": {},\n", json_string(options.target_text));
    out += fmt::format("  \"concurrency\": {},\n  \"threads\": {},\n", options.concurrency, options.threads);
    out += fmt::format("  \"mix\": {},\n", json_string(options.mix.describe()));
    out += fmt::format("  \"message_size\": {},\n", options.message_size);
    out += fmt::format("  \"elapsed_s\": {:.3f},\n", elapsed_s);
    out += fmt::format("  \"source_retries\": {},\n", stats.source_retries);
    out += fmt::format("  \"cpu_user_s\": {:.3f},\n  \"cpu_sys_s\": {:.3f},\n", cpu.user_s, cpu.sys_s);
    out += fmt::format("  \"runq_wait_s\": {:.3f},\n", cpu.runq_wait_s);
    if (tls_first) {
        out += fmt::format("  \"tls\": {{\"resume\": {}, \"version\": {}, \"cipher\": {}, \"group\": {}}},\n",
                           options.tls_resume ? "true" : "false", json_string(tls_first->version),
                           json_string(tls_first->cipher), json_string(tls_first->group));
    }
    json_role(out, stats.total(), elapsed_s, "  ");
    out += ",\n  \"roles\": {";
    bool first = true;
    for (Role role : kAllRoles) {
        const RoleStats& r = stats.roles[index_of(role)];
        if (r.sessions == 0 && options.mix.weight(role) == 0) continue;
        out += fmt::format("{}\n    \"{}\": {{\n", first ? "" : ",", role_name(role));
        json_role(out, r, elapsed_s, "      ");
        out += "\n    }";
        first = false;
    }
    out += "\n  }\n}\n";
    return out;
}

}  // namespace smtpload
