// idle-floor: the least a screen built on libuv and c-ares can hold an idle client in,
// the floor bench/run-bench's idle workloads are read against (bench/README.md). One
// loop: it accepts, writes the first line of a greeting, reads to notice the close, and
// with --dns asks one A query per client (the client's address reversed under --zone,
// as a DNSBL lookup) of a server that never answers; the query stays in flight because
// nothing here ever runs c-ares's timeouts. No session, no timer, no log, no limits:
// what is left per client is libuv's uv_tcp_t and, with --dns, c-ares's query.
//
//   idle-floor --listen 127.0.0.1:PORT [--dns 127.0.0.1:PORT] [--zone bl.test]
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Floor {
    uv_loop_t* loop = nullptr;
    ares_channel dns = nullptr;  // null without --dns
    std::string zone = "bl.test";
};

// The client's IPv4 address reversed under the zone: 2.0.4.127.bl.test.
std::string dnsbl_name(const sockaddr_storage& peer, const std::string& zone) {
    if (peer.ss_family != AF_INET) return "";
    const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
    const auto* b = reinterpret_cast<const unsigned char*>(&in->sin_addr.s_addr);
    char name[300];
    std::snprintf(name, sizeof name, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone.c_str());
    return name;
}

void on_closed(uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); }

// One buffer for every read: an idle client sends nothing, and smtpscreen's loop has
// one read buffer too.
void alloc_shared(uv_handle_t*, size_t, uv_buf_t* buf) {
    static char shared[4096];
    *buf = uv_buf_init(shared, sizeof shared);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t*) {
    if (n < 0) uv_close(reinterpret_cast<uv_handle_t*>(s), on_closed);
}

void on_answer(void*, int, int, unsigned char*, int) {}

void on_connection(uv_stream_t* listener, int status) {
    if (status != 0) return;
    auto* floor = static_cast<Floor*>(listener->data);
    auto* tcp = new uv_tcp_t;
    uv_tcp_init(floor->loop, tcp);
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(tcp)) != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(tcp), on_closed);
        return;
    }
    static const char first_line[] = "220-screen.bench.test ESMTP\r\n";
    uv_buf_t line = uv_buf_init(const_cast<char*>(first_line), sizeof first_line - 1);
    uv_try_write(reinterpret_cast<uv_stream_t*>(tcp), &line, 1);
    uv_read_start(reinterpret_cast<uv_stream_t*>(tcp), alloc_shared, on_read);
    if (floor->dns) {
        sockaddr_storage peer{};
        int len = sizeof peer;
        uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&peer), &len);
        const std::string name = dnsbl_name(peer, floor->zone);
        if (!name.empty()) ares_query(floor->dns, name.c_str(), C_IN, T_A, on_answer, nullptr);
    }
}

int usage() {
    std::fprintf(stderr, "usage: idle-floor --listen 127.0.0.1:PORT [--dns 127.0.0.1:PORT] [--zone bl.test]\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string listen, dns;
    Floor floor;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string key = argv[i];
        if (key == "--listen") listen = argv[i + 1];
        else if (key == "--dns") dns = argv[i + 1];
        else if (key == "--zone") floor.zone = argv[i + 1];
        else return usage();
    }
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos) return usage();
    floor.loop = uv_default_loop();
    if (!dns.empty()) {
        ares_library_init(ARES_LIB_INIT_ALL);
        ares_options options{};
        options.timeout = 3600 * 1000;
        options.tries = 1;
        if (ares_init_options(&floor.dns, &options, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS ||
            ares_set_servers_ports_csv(floor.dns, dns.c_str()) != ARES_SUCCESS) {
            std::fprintf(stderr, "idle-floor: cannot set up c-ares with the server %s\n", dns.c_str());
            return 1;
        }
    }
    sockaddr_in addr{};
    if (uv_ip4_addr(listen.substr(0, colon).c_str(), std::atoi(listen.c_str() + colon + 1), &addr) != 0) return usage();
    uv_tcp_t server;
    uv_tcp_init(floor.loop, &server);
    server.data = &floor;
    if (uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&addr), 0) != 0 ||
        uv_listen(reinterpret_cast<uv_stream_t*>(&server), 4096, on_connection) != 0) {
        std::fprintf(stderr, "idle-floor: cannot listen on %s\n", listen.c_str());
        return 1;
    }
    std::fprintf(stderr, "idle-floor: listening on %s%s%s\n", listen.c_str(), dns.empty() ? "" : ", DNSBL queries to ",
                 dns.c_str());
    return uv_run(floor.loop, UV_RUN_DEFAULT);
}
