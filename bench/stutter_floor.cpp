// stutter-floor: the least a tarpit can do, the floor bench/tarpit-cost measures
// smtpscreen's tarpit against (bench/README.md). One thread, epoll on the listener
// only: it accepts, and gives every connection one octet of --banner per --delay-ms,
// each with one send(2). The octets fall due on the grid smtpscreen's tarpit uses
// (edge/tarpit.h: delay/16, 1 to 64 ms), so the writes come in the same batches and
// what differs between the two is what smtpscreen does around each write. It never
// reads what a client sends (smtpscreen's tarpit does not either while a reply goes
// out), and closes a connection once its banner is out or a send fails (the client
// left). No log, no limits, no timer per connection: a wheel of buckets of (socket,
// octets sent, due time), one bucket per grid point.
//
//   stutter-floor --listen 127.0.0.1:PORT [--delay-ms 1000] [--banner TEXT]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

uint64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// Every held connection, in the bucket of the grid point its next octet is due at.
// The buckets are vectors that keep their capacity, so the steady state allocates
// nothing.
class Wheel {
public:
    Wheel(uint64_t delay_ms, std::string banner)
        : delay_ms_(std::max<uint64_t>(delay_ms, 1)),
          grain_ms_(std::clamp<uint64_t>(delay_ms_ / 16, 1, 64)),
          buckets_((delay_ms_ + grain_ms_ - 1) / grain_ms_ + 2),
          banner_(std::move(banner)) {}
    ~Wheel() {
        for (auto& bucket : buckets_) {
            for (const Held& h : bucket) ::close(h.fd);
        }
    }
    Wheel(const Wheel&) = delete;
    Wheel& operator=(const Wheel&) = delete;

    void add(int fd, uint64_t now) {
        if (held_++ == 0) next_tick_ = grid(now);  // nothing to catch up on after a quiet spell
        schedule({fd, 0, 0}, now);
    }

    // Writes every octet due up to now, grid point by grid point (a late wake-up
    // catches up on the points it missed).
    void run(uint64_t now) {
        for (; next_tick_ <= now; next_tick_ += grain_ms_) {
            std::vector<Held>& bucket = buckets_[slot(next_tick_)];
            batch_.swap(bucket);
            for (Held h : batch_) {
                // A bucket is shared by the grid points a turn of the wheel apart; one
                // due on a later turn stays.
                if (h.due > now) bucket.push_back(h);
                else give_octet(h, now);
            }
            batch_.clear();
        }
    }

    // Milliseconds until the next grid point, or -1 (no connection: wait for one).
    int timeout(uint64_t now) const {
        if (held_ == 0) return -1;
        return next_tick_ > now ? static_cast<int>(next_tick_ - now) : 0;
    }

private:
    struct Held {
        int fd;
        uint32_t sent;
        uint64_t due;
    };

    uint64_t grid(uint64_t at) const { return (at + grain_ms_ - 1) / grain_ms_ * grain_ms_; }
    size_t slot(uint64_t at) const { return (at / grain_ms_) % buckets_.size(); }

    // Never sooner than one delay after now, as the tarpit's Stutter.
    void schedule(Held h, uint64_t now) {
        h.due = grid(now + delay_ms_);
        buckets_[slot(h.due)].push_back(h);
    }

    void give_octet(Held h, uint64_t now) {
        ssize_t n = ::send(h.fd, banner_.data() + h.sent, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return drop(h.fd);
        if (n == 1 && ++h.sent == banner_.size()) return drop(h.fd);
        schedule(h, now);  // EAGAIN: a client that does not read gets nothing on top
    }

    void drop(int fd) {
        ::close(fd);
        --held_;
    }

    uint64_t delay_ms_;
    uint64_t grain_ms_;
    std::vector<std::vector<Held>> buckets_;
    std::vector<Held> batch_;
    std::string banner_;
    uint64_t next_tick_ = 0;
    size_t held_ = 0;
};

int usage() {
    std::fputs("usage: stutter-floor --listen 127.0.0.1:PORT [--delay-ms 1000] [--banner TEXT]\n", stderr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string listen;
    uint64_t delay_ms = 1000;
    std::string banner = "floor.bench.test ESMTP stutter floor";
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        if (a == "--listen") listen = argv[i + 1];
        else if (a == "--delay-ms") delay_ms = std::strtoull(argv[i + 1], nullptr, 10);
        else if (a == "--banner") banner = argv[i + 1];
        else return usage();
    }
    if (listen.empty() || argc % 2 == 0 || delay_ms == 0 || banner.empty()) return usage();
    // A greeting as smtpscreen's tarpit gives it, so that an SMTP client reads a reply.
    banner = "220 " + banner + "\r\n";

    size_t colon = listen.rfind(':');
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    if (colon == std::string::npos || inet_pton(AF_INET, listen.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
        return usage();
    }
    sa.sin_port = htons(static_cast<uint16_t>(std::atoi(listen.c_str() + colon + 1)));

    Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // As smtpscreen's listener: accepted sockets inherit it, and each octet leaves at once.
    setsockopt(listener.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (listener.get() < 0 || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(listener.get(), 4096) != 0) {
        std::fprintf(stderr, "stutter-floor: cannot listen on %s: %s\n", listen.c_str(), std::strerror(errno));
        return 1;
    }
    Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener.get();
    if (epoll.get() < 0 || epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &ev) != 0) {
        std::fprintf(stderr, "stutter-floor: epoll: %s\n", std::strerror(errno));
        return 1;
    }
    std::fprintf(stderr, "stutter-floor: listening on %s, one octet per %llu ms\n", listen.c_str(),
                 static_cast<unsigned long long>(delay_ms));

    Wheel wheel(delay_ms, banner);
    for (;;) {
        epoll_event ready{};
        int n = epoll_wait(epoll.get(), &ready, 1, wheel.timeout(now_ms()));
        if (n < 0 && errno != EINTR) {
            std::fprintf(stderr, "stutter-floor: epoll_wait: %s\n", std::strerror(errno));
            return 1;
        }
        uint64_t now = now_ms();
        if (n > 0) {
            for (;;) {
                int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) break;  // EAGAIN: all taken; EMFILE and the like: try at the next wake-up
                wheel.add(fd, now);
            }
        }
        wheel.run(now);
    }
}
