#include "proxy/service_notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <fmt/format.h>

#include <string>

namespace smtpscreen::service_notify {

namespace {

// The state changes are best effort: a service manager that went away must not stop
// the mail flow, so errors from sd_notify are ignored.
void send(const std::string& state) { ::sd_notify(0, state.c_str()); }

}  // namespace

void ready(std::string_view status) { send(fmt::format("READY=1\nSTATUS={}", status)); }

void reloading() {
    // MONOTONIC_USEC lets systemd 253's Type=notify-reload tell this reload from an
    // earlier one; systemd 252 ignores it.
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const long long usec = static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
    send(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration", usec));
}

void stopping() { send("STOPPING=1\nSTATUS=stopping: sessions in progress may finish"); }

}  // namespace smtpscreen::service_notify
