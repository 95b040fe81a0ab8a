#include "core/log.h"

#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

namespace smtpscreen {

namespace {

// openlog(3) keeps the ident pointer for the life of the process and closelog(3)
// resets it for everybody, so a Logger replaced on SIGHUP must neither free the name
// it handed to openlog nor close the connection. Names are interned for the process
// lifetime instead; there are at most a handful (one per distinct log.syslog_name).
const char* interned_ident(const std::string& name) {
    static std::mutex mutex;
    static std::set<std::string> names;
    std::lock_guard lock(mutex);
    return names.insert(name).first->c_str();
}

int syslog_priority(LogLevel level) {
    switch (level) {
    case LogLevel::Warning: return LOG_WARNING;
    case LogLevel::Error: return LOG_ERR;
    case LogLevel::Info: break;
    }
    return LOG_INFO;
}

std::string_view level_prefix(LogLevel level) {
    switch (level) {
    case LogLevel::Warning: return "warning: ";
    case LogLevel::Error: return "error: ";
    case LogLevel::Info: break;
    }
    return "";
}

// Log lines quote client bytes (PREGREET text, commands); a CR or LF in them must not
// start a forged line of its own. Postfix's printable() does the same.
std::string printable(std::string_view line) {
    std::string out(line);
    for (char& c : out) {
        auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) c = '?';
    }
    return out;
}

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // nowhere left to report a failing stderr
        }
        data.remove_prefix(static_cast<size_t>(n));
    }
}

}  // namespace

bool stderr_logging_for_auto(bool to_syslog) {
    if (!to_syslog) return true;
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) return true;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return true;
    // The variable is inherited by children whose stderr may be elsewhere: only a match
    // of the descriptor itself counts (as sd_journal_stream_fd's documentation says).
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return true;
    return !(static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino);
}

Logger::Logger(bool to_syslog, std::string syslog_name, bool to_stderr)
    : to_syslog_(to_syslog), syslog_name_(std::move(syslog_name)), to_stderr_(to_stderr) {
    if (to_syslog_) openlog(interned_ident(syslog_name_), LOG_PID | LOG_NDELAY, LOG_MAIL);
}

// No closelog(): the syslog connection is process-wide and a newer Logger may use it.
Logger::~Logger() = default;

void Logger::write(LogLevel level, std::string_view line) {
    const std::string out = to_syslog_and_stderr_text(level, line);
    if (!out.empty()) write_stderr(out);
}

std::string Logger::to_syslog_and_stderr_text(LogLevel level, std::string_view line) {
    std::string text = std::string(level_prefix(level)) + printable(line);
    if (to_syslog_) syslog(syslog_priority(level), "%s", text.c_str());
    if (!to_stderr_) return {};
    return fmt::format("{}[{}]: {}\n", syslog_name_, pid_, text);
}

void Logger::write_stderr(std::string_view lines) { write_all(STDERR_FILENO, lines); }

}  // namespace smtpscreen
