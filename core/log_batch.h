#pragma once
// The log lines of one event loop, written to stderr a loop turn at a time: the loop's
// owner calls flush() just before the loop waits for events (a uv_prepare_t), so every
// line is on stderr before the loop sleeps, and a turn that handled many sessions costs
// one write(2) instead of one per line (docs/design.md, "Log lines"). A known client's
// session logs three lines; at the rates smtpscreen proxies, one system call per line
// was a tenth of what the session itself made.
//
// Order is kept: a warning or an error is written at once, after the lines before it,
// so a failure is never left waiting in memory. A batch never grows past PIPE_BUF: a
// write of at most PIPE_BUF bytes to a pipe (journald's stdout stream, a shell's
// `2>&1 | tee`) is atomic, so another thread's batch can never cut into a line. Lines
// to syslog are not batched: syslog(3) sends one datagram per line.
#include <string>
#include <string_view>

#include "core/log.h"

namespace smtpscreen {

class LogBatch : public LineWriter<LogBatch> {
public:
    explicit LogBatch(Logger& log) : log_(log) {}
    ~LogBatch() { flush(); }
    LogBatch(const LogBatch&) = delete;
    LogBatch& operator=(const LogBatch&) = delete;

    void write(LogLevel level, std::string_view line);
    void flush();

    size_t pending_bytes() const { return pending_.size(); }

private:
    Logger& log_;
    std::string pending_;
};

}  // namespace smtpscreen
