// starttls-floor: the least an SMTP server can do around a STARTTLS handshake, as the
// floor bench/tls-compare measures the others against (bench/README.md). One libuv
// loop, the TLS library on memory buffers (bench/floor_tls.h): it greets, answers EHLO
// with STARTTLS, answers STARTTLS with 220, makes the TLS 1.2 handshake and closes at
// the client's close_notify. No backend, no log, no checks: whatever a real server does
// on top of this is its own cost. --library openssl (the default) is the floor of every
// server; --library mbedtls is the floor of mbedTLS 2.28, the library smtpscreen uses.
//
//   starttls-floor --listen 127.0.0.1:PORT --cert CHAIN.pem --key KEY.pem [--library openssl|mbedtls]
#include <arpa/inet.h>
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "bench/floor_tls.h"
#include "core/uv_handle.h"

namespace {

using starttls_floor::TlsServer;
using starttls_floor::TlsSession;

constexpr size_t kMaxLine = 1000;  // RFC 5321's command line limit, with its CRLF

// One client, from accept to close. Deleted right after its handle is closed:
// UvHandle clears the handle's data, so a write that completes later finds nobody.
class Connection {
public:
    Connection(uv_loop_t* loop, TlsServer* server)
        : server_(server), tcp_([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }, this) {}

    bool accept(uv_stream_t* server) {
        if (!tcp_ || uv_accept(server, tcp_.stream()) != 0) return false;
        uv_tcp_nodelay(tcp_.get(), 1);
        uv_read_start(
            tcp_.stream(),
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                auto* self = static_cast<Connection*>(h->data);
                *buf = self != nullptr ? uv_buf_init(self->buffer_, sizeof self->buffer_) : uv_buf_init(nullptr, 0);
            },
            [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                auto* self = static_cast<Connection*>(s->data);
                if (self == nullptr) return;
                if (n < 0) return self->close();
                self->on_bytes(std::string_view(buf->base, static_cast<size_t>(n)));
            });
        write("220 floor.bench.test ESMTP\r\n");
        return true;
    }

private:
    void on_bytes(std::string_view bytes) {
        if (tls_) return on_tls(bytes);
        line_.append(bytes);
        size_t end;
        while (!tls_ && (end = line_.find("\r\n")) != std::string::npos) {
            std::string command = line_.substr(0, end);
            line_.erase(0, end + 2);
            if (!on_command(command)) return;
        }
        if (!tls_ && line_.size() > kMaxLine) return close();
        // Bytes the client sent after STARTTLS in the same segment belong to TLS.
        if (tls_ && !line_.empty()) {
            std::string rest = std::move(line_);
            line_.clear();
            on_tls(rest);
        }
    }

    // False when the connection is gone.
    bool on_command(std::string_view command) {
        std::string verb(command.substr(0, 8));
        for (char& c : verb) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
        if (verb.starts_with("EHLO")) return write("250-floor.bench.test\r\n250 STARTTLS\r\n");
        if (verb == "STARTTLS") {
            write("220 2.0.0 Ready to start TLS\r\n");
            return start_tls();
        }
        if (verb.starts_with("QUIT")) {
            write("221 2.0.0 Bye\r\n");
            close();
            return false;
        }
        return write("502 5.5.2 Only EHLO, STARTTLS and QUIT here\r\n");
    }

    bool start_tls() {
        tls_ = server_->session();
        if (!tls_) {
            close();
            return false;
        }
        return true;
    }

    void on_tls(std::string_view bytes) {
        std::string out;
        const bool open = tls_->on_bytes(bytes, out);
        if (!out.empty() && !write(std::move(out))) return;
        if (!open) close();
    }

    bool write(std::string text) {
        struct Req {
            uv_write_t req{};
            std::string bytes;
        };
        auto* r = new Req{};
        r->bytes = std::move(text);
        uv_buf_t buf = uv_buf_init(r->bytes.data(), static_cast<unsigned>(r->bytes.size()));
        if (uv_write(&r->req, tcp_.stream(), &buf, 1, [](uv_write_t* w, int) { delete reinterpret_cast<Req*>(w); }) !=
            0) {
            delete r;
            close();
            return false;
        }
        return true;
    }

    void close() {
        tcp_.close();
        delete this;
    }

    TlsServer* server_;
    smtpscreen::UvHandle<uv_tcp_t> tcp_;
    std::unique_ptr<TlsSession> tls_;
    std::string line_;
    char buffer_[16 * 1024];
};

int usage() {
    std::fputs("usage: starttls-floor --listen 127.0.0.1:PORT --cert CHAIN.pem --key KEY.pem "
               "[--library openssl|mbedtls]\n",
               stderr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    const char* listen = nullptr;
    const char* cert = nullptr;
    const char* key = nullptr;
    std::string_view library = "openssl";
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        if (a == "--listen") listen = argv[i + 1];
        else if (a == "--cert") cert = argv[i + 1];
        else if (a == "--key") key = argv[i + 1];
        else if (a == "--library") library = argv[i + 1];
        else return usage();
    }
    if (listen == nullptr || cert == nullptr || key == nullptr || argc % 2 == 0) return usage();
    if (library != "openssl" && library != "mbedtls") return usage();
    std::string addr(listen);
    size_t colon = addr.rfind(':');
    sockaddr_in sa{};
    if (colon == std::string::npos || uv_ip4_addr(addr.substr(0, colon).c_str(), std::atoi(addr.c_str() + colon + 1), &sa) != 0) {
        return usage();
    }
    std::signal(SIGPIPE, SIG_IGN);
    std::string error;
    std::unique_ptr<TlsServer> tls = library == "mbedtls" ? starttls_floor::mbedtls_server(cert, key, &error)
                                                          : starttls_floor::openssl_server(cert, key, &error);
    if (!tls) {
        std::fprintf(stderr, "starttls-floor: %s\n", error.c_str());
        return 1;
    }

    uv_loop_t* loop = uv_default_loop();
    smtpscreen::UvHandle<uv_tcp_t> server([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }, tls.get());
    if (!server || uv_tcp_bind(server.get(), reinterpret_cast<const sockaddr*>(&sa), 0) != 0) {
        std::fprintf(stderr, "starttls-floor: cannot bind %s\n", listen);
        return 1;
    }
    uv_tcp_nodelay(server.get(), 1);
    int rc = uv_listen(server.stream(), 4096, [](uv_stream_t* s, int status) {
        if (status != 0) return;
        auto* c = new Connection(s->loop, static_cast<TlsServer*>(s->data));
        if (!c->accept(s)) delete c;
    });
    if (rc != 0) {
        std::fprintf(stderr, "starttls-floor: cannot listen on %s: %s\n", listen, uv_strerror(rc));
        return 1;
    }
    std::fprintf(stderr, "starttls-floor (%s): listening on %s\n", std::string(library).c_str(), listen);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
