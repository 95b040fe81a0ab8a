#pragma once
// What systemd (Type=notify) hears from smtpscreen: READY=1 once every listener is open,
// RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM/SIGINT. Outside
// systemd ($NOTIFY_SOCKET unset) every call does nothing.
#include <string_view>

namespace smtpscreen {

namespace service_notify {

void ready(std::string_view status);
void reloading();
void stopping();

}  // namespace service_notify

}  // namespace smtpscreen
