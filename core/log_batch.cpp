#include "core/log_batch.h"

#include <climits>

namespace smtpscreen {

void LogBatch::write(LogLevel level, std::string_view line) {
    std::string text = log_.to_syslog_and_stderr_text(level, line);
    if (text.empty()) return;  // stderr is off
    if (pending_.size() + text.size() > PIPE_BUF) flush();
    pending_ += text;  // the buffer keeps its capacity from turn to turn
    // A line longer than PIPE_BUF goes alone, as Logger::write would send it.
    if (level != LogLevel::Info || pending_.size() >= PIPE_BUF) flush();
}

void LogBatch::flush() {
    if (pending_.empty()) return;
    log_.write_stderr(pending_);
    pending_.clear();
}

}  // namespace smtpscreen
