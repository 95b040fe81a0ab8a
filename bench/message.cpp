#include "bench/message.h"

#include <algorithm>

namespace smtpload {

std::string build_message(size_t body_size, std::string_view from, std::string_view to) {
    std::string m;
    m.reserve(body_size + body_size / 38 + 512);
    m += "From: <" + std::string(from) + ">\r\n";
    m += "To: <" + std::string(to) + ">\r\n";
    m += "Subject: smtpload bench message\r\n";
    m += "Message-ID: <smtpload@bench.test>\r\n";
    m += "\r\n";
    static constexpr std::string_view kText =
        "The quick brown fox jumps over the lazy dog while smtpload measures the proxy. ";
    size_t written = 0;
    size_t line = 0;
    while (written < body_size) {
        size_t len = std::min<size_t>(76, body_size - written);
        bool dotted = (++line % 40) == 0;
        if (dotted) m += "..";  // a "." line, stuffed
        for (size_t i = dotted ? 1 : 0; i < len; ++i) m += kText[(written + i) % kText.size()];
        m += "\r\n";
        written += len;
    }
    m += ".\r\n";
    return m;
}

}  // namespace smtpload
