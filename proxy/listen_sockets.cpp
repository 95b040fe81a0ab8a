#include "proxy/listen_sockets.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace smtpscreen {
namespace {

// Closes a socket unless it was handed on.
class Socket {
public:
    explicit Socket(int fd) : fd_(fd) {}
    ~Socket() {
        if (fd_ >= 0) ::close(fd_);
    }
    Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    int release() { return std::exchange(fd_, -1); }
    int get() const { return fd_; }

private:
    int fd_;
};

Socket bind_listener(const Endpoint& addr, bool reuse_port) {
    Socket s(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (s.get() < 0) throw std::runtime_error(fmt::format("socket() for {}: {}", addr.ip_port(), std::strerror(errno)));
    int one = 1;
    setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // Several loops share one address through SO_REUSEPORT: the kernel spreads the
    // connections, so no loop hands sockets to another.
    if (reuse_port) setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (addr.is_v6()) setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    // Replies are small and must leave at once. Accepted sockets inherit TCP_NODELAY from
    // the listener on Linux, which saves a setsockopt(2) per client.
    setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::bind(s.get(), addr.sa(), addr.sa_len()) != 0) {
        int err = errno;
        std::string hint = err == EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE; start as root "
                                           "and set process.user)"
                           : err == EADDRINUSE ? " (another program listens there; stop it or change listen.address)"
                           : err == EADDRNOTAVAIL ? " (no interface has this address; fix listen.address)"
                                                  : "";
        throw std::runtime_error(fmt::format("cannot listen on {}: {}{}", addr.ip_port(), std::strerror(err), hint));
    }
    return s;
}

Endpoint local_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        if (auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss))) return *e;
    }
    throw std::runtime_error(fmt::format(
        "socket activation: descriptor {} is not a TCP socket with an address (ListenStream= in smtpscreen.socket "
        "must name TCP addresses)",
        fd));
}

}  // namespace

ListenSockets::ListenSockets(const std::vector<Endpoint>& addresses, int threads, Logger& log) : threads_(threads) {
    // unset_environment = 1: nothing this process starts may take the sockets for its own.
    const int n = ::sd_listen_fds(1);
    if (n < 0) throw std::runtime_error(fmt::format("socket activation: {}", std::strerror(-n)));
    if (n > 0) {
        inherited_ = true;
        for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; ++fd) {
            if (::sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
                throw std::runtime_error(fmt::format(
                    "socket activation: descriptor {} is not a listening stream socket (smtpscreen.socket must "
                    "use ListenStream=)",
                    fd));
            }
            ::fcntl(fd, F_SETFD, FD_CLOEXEC);
            Listening l{local_address(fd), {fd}};
            // Every loop accepts from the same socket through its own descriptor.
            for (int t = 1; t < threads; ++t) {
                int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
                if (copy < 0) throw std::runtime_error(fmt::format("socket activation: dup: {}", std::strerror(errno)));
                l.per_thread.push_back(copy);
            }
            sockets_.push_back(std::move(l));
        }
        for (const Endpoint& a : addresses) {
            if (std::none_of(sockets_.begin(), sockets_.end(), [&](const Listening& l) { return l.address == a; })) {
                log.warn("listen.address {} is not used: the listeners come from systemd's socket activation ({}); "
                         "change ListenStream= in smtpscreen.socket instead",
                         a.ip_port(), describe());
            }
        }
        return;
    }
    std::vector<Socket> bound;
    for (const Endpoint& addr : addresses) {
        Listening l{addr, {}};
        for (int t = 0; t < threads; ++t) {
            bound.push_back(bind_listener(addr, threads > 1));
            l.per_thread.push_back(bound.back().get());
        }
        sockets_.push_back(std::move(l));
    }
    for (auto& s : bound) s.release();
}

std::vector<uv_os_sock_t> ListenSockets::for_thread(size_t thread) const {
    std::vector<uv_os_sock_t> fds;
    for (const auto& l : sockets_) fds.push_back(l.per_thread.at(thread));
    return fds;
}

std::string ListenSockets::describe() const {
    std::string out;
    for (const auto& l : sockets_) out += (out.empty() ? "" : ", ") + l.address.ip_port();
    return out;
}

bool ListenSockets::update(const std::vector<Endpoint>& addresses, std::string& why) {
    if (inherited_) {
        std::vector<Endpoint> now;
        for (const auto& l : sockets_) now.push_back(l.address);
        if (now != addresses) {
            why = fmt::format("listen.address is not used: the listeners come from systemd's socket activation ({}); "
                              "change ListenStream= in smtpscreen.socket instead",
                              describe());
        }
        return true;
    }
    std::vector<Socket> bound;
    std::vector<Listening> next;
    try {
        for (const Endpoint& addr : addresses) {
            auto same = std::find_if(sockets_.begin(), sockets_.end(), [&](const Listening& l) { return l.address == addr; });
            if (same != sockets_.end()) {
                next.push_back(*same);
                continue;
            }
            Listening l{addr, {}};
            for (int t = 0; t < threads_; ++t) {
                bound.push_back(bind_listener(addr, threads_ > 1));
                l.per_thread.push_back(bound.back().get());
            }
            next.push_back(std::move(l));
        }
    } catch (const std::exception& e) {
        why = e.what();
        return false;  // `bound` closes what this attempt opened
    }
    for (auto& s : bound) s.release();
    sockets_ = std::move(next);
    return true;
}

}  // namespace smtpscreen
