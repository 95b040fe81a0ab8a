#pragma once
// One logger per process, passed by reference (no global). Lines go to syslog under
// log.syslog_name and/or to stderr; each line is written with one call so that
// threads never interleave within a line. An event loop's lines go through its
// LogBatch (core/log_batch.h), which writes a turn's lines to stderr in one call.
#include <fmt/format.h>
#include <unistd.h>

#include <string>
#include <string_view>

namespace smtpscreen {

enum class LogLevel { Info, Warning, Error };

// log.stderr = auto: stderr, unless it is the systemd journal ($JOURNAL_STREAM names its
// device and inode) and syslog is on, which reaches the journal too: no line twice.
bool stderr_logging_for_auto(bool to_syslog);

// info/warn/error with fmt's compile-time checked format strings, for every class that
// writes whole lines with write(LogLevel, std::string_view).
template <typename Sink>
class LineWriter {
public:
    template <typename... Args>
    void info(fmt::format_string<Args...> f, Args&&... args) {
        sink().write(LogLevel::Info, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void warn(fmt::format_string<Args...> f, Args&&... args) {
        sink().write(LogLevel::Warning, fmt::format(f, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void error(fmt::format_string<Args...> f, Args&&... args) {
        sink().write(LogLevel::Error, fmt::format(f, std::forward<Args>(args)...));
    }

private:
    Sink& sink() { return static_cast<Sink&>(*this); }
};

class Logger : public LineWriter<Logger> {
public:
    Logger(bool to_syslog, std::string syslog_name, bool to_stderr);
    ~Logger();
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;

    void write(LogLevel level, std::string_view line);

    // The two halves of write(), for LogBatch (core/log_batch.h): sends the line to syslog
    // when that is on (one datagram per line, as syslog(3) has it) and returns it as
    // stderr takes it, "name[pid]: text\n", or nothing when stderr is off.
    std::string to_syslog_and_stderr_text(LogLevel level, std::string_view line);
    // Whole lines made by to_syslog_and_stderr_text, with one write(2).
    void write_stderr(std::string_view lines);

private:
    bool to_syslog_;
    std::string syslog_name_;
    bool to_stderr_;
    int pid_ = static_cast<int>(::getpid());  // one system call per process, not per line
};

}  // namespace smtpscreen
