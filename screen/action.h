#pragma once
// What a test that a client fails does to it: greet.action, dnsbl.action, deep.action
// and access.action (postscreen's *_action parameters, and spamd's tarpit).
#include <array>
#include <string_view>
#include <utility>

namespace smtpscreen {

enum class Action {
    Ignore,   // log only
    Enforce,  // go on, then refuse the client's RCPT TO (550) and log why
    Drop,     // 521 and close
    Tarpit,   // enforce, each reply sent one byte per tarpit.delay (edge/tarpit.h)
};

// As the configuration writes them.
inline constexpr std::array<std::pair<std::string_view, Action>, 4> kActionNames{{
    {"ignore", Action::Ignore}, {"enforce", Action::Enforce}, {"drop", Action::Drop}, {"tarpit", Action::Tarpit}}};

}  // namespace smtpscreen
