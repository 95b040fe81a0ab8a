#pragma once
// What the dialog tests read out of SmtpDialog's events: the reply text, and the kinds.
#include <string>
#include <vector>

#include "screen/smtp_dialog.h"

namespace smtpscreen::test {

// Every Reply event's text, in order.
inline std::string replies(const std::vector<DialogEvent>& events) {
    std::string out;
    for (const auto& e : events) {
        if (e.kind == DialogEvent::Kind::Reply) out += e.text;
    }
    return out;
}

inline std::vector<DialogEvent::Kind> kinds(const std::vector<DialogEvent>& events) {
    std::vector<DialogEvent::Kind> out;
    for (const auto& e : events) out.push_back(e.kind);
    return out;
}

}  // namespace smtpscreen::test
