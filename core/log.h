#pragma once
// One logger per process, passed by reference (no global). Lines go to syslog under
// log.syslog_name and/or to stderr; each line is written with one call so that
// threads never interleave within a line.
#include <fmt/format.h>
#include <unistd.h>

#include <string>
#include <string_view>

namespace smtpscreen {

enum class LogLevel { Info, Warning, Error };

// log.stderr = auto: stderr, unless it is the systemd journal ($JOURNAL_STREAM names its
// device and inode) and syslog is on, which reaches the journal too: no line twice.
bool stderr_logging_for_auto(bool to_syslog);

class Logger {
public:
    Logger(bool to_syslog, std::string syslog_name, bool to_stderr);
    ~Logger();
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;

    void write(LogLevel level, std::string_view line);

    template <typename... Args>
    void info(fmt::format_string<Args...> f, Args&&... args) {
        write(LogLevel::Info, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void warn(fmt::format_string<Args...> f, Args&&... args) {
        write(LogLevel::Warning, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void error(fmt::format_string<Args...> f, Args&&... args) {
        write(LogLevel::Error, fmt::format(f, std::forward<Args>(args)...));
    }

private:
    bool to_syslog_;
    std::string syslog_name_;
    bool to_stderr_;
    int pid_ = static_cast<int>(::getpid());  // one system call per process, not per line
};

}  // namespace smtpscreen
