#pragma once
// The listening sockets of the process, one per address and event-loop thread: bound
// from listen.address (as root before the privilege drop, or on SIGHUP with the
// CAP_NET_BIND_SERVICE that is kept), or inherited from systemd's socket activation
// (LISTEN_FDS), in which case the socket unit, not listen.address, says where to listen
// and the kernel keeps the sockets and their backlog across a restart.
//
// The set only names the descriptors; the workers' libuv handles own and close them.
#include <uv.h>

#include <string>
#include <vector>

#include "core/address.h"
#include "core/log.h"

namespace smtpscreen {

class ListenSockets {
public:
    // Inherits systemd's sockets when LISTEN_FDS/LISTEN_PID name this process, else
    // binds every address. Throws std::runtime_error naming the address and what to do.
    ListenSockets(const std::vector<Endpoint>& addresses, int threads, Logger& log);

    bool inherited() const { return inherited_; }
    // The descriptors for thread i, in address order.
    std::vector<uv_os_sock_t> for_thread(size_t thread) const;
    // "127.0.0.1:25, [::1]:25", for the start-up line.
    std::string describe() const;

    // SIGHUP with a new listen.address: binds what is new, forgets what is gone (the
    // workers close those when they get the new lists). Returns false, with why, when an
    // address cannot be bound; then nothing changed. With inherited sockets the socket
    // unit decides: returns true with a note in why that listen.address is not used.
    bool update(const std::vector<Endpoint>& addresses, std::string& why);

private:
    struct Listening {
        Endpoint address;
        std::vector<uv_os_sock_t> per_thread;
    };
    std::vector<Listening> sockets_;
    int threads_;
    bool inherited_ = false;
};

}  // namespace smtpscreen
