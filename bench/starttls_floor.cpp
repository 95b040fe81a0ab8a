// starttls-floor: the least an SMTP server can do around a STARTTLS handshake, as the
// floor bench/tls-compare measures the others against (bench/README.md). One libuv
// loop, OpenSSL on memory BIOs: it greets, answers EHLO with STARTTLS, answers
// STARTTLS with 220, makes the TLS 1.2 handshake and closes at the client's
// close_notify. No backend, no log, no checks: whatever a real server does on top of
// this is its own cost. OpenSSL's default session tickets give resumption.
//
//   starttls-floor --listen 127.0.0.1:PORT --cert CHAIN.pem --key KEY.pem
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "core/uv_handle.h"

namespace {

constexpr size_t kMaxLine = 1000;  // RFC 5321's command line limit, with its CRLF

std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};

// One client, from accept to close. Deleted right after its handle is closed:
// UvHandle clears the handle's data, so a write that completes later finds nobody.
class Connection {
public:
    Connection(uv_loop_t* loop, SSL_CTX* ctx)
        : ctx_(ctx), tcp_([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }, this) {}

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
        if (ssl_) return on_tls(bytes);
        line_.append(bytes);
        size_t end;
        while (!ssl_ && (end = line_.find("\r\n")) != std::string::npos) {
            std::string command = line_.substr(0, end);
            line_.erase(0, end + 2);
            if (!on_command(command)) return;
        }
        if (!ssl_ && line_.size() > kMaxLine) return close();
        // Bytes the client sent after STARTTLS in the same segment belong to TLS.
        if (ssl_ && !line_.empty()) {
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
        ssl_.reset(SSL_new(ctx_));
        BIO* in = BIO_new(BIO_s_mem());
        BIO* out = BIO_new(BIO_s_mem());
        if (!ssl_ || in == nullptr || out == nullptr) {
            BIO_free(in);
            BIO_free(out);
            close();
            return false;
        }
        SSL_set_bio(ssl_.get(), in, out);
        SSL_set_accept_state(ssl_.get());
        in_ = in;
        out_ = out;
        return true;
    }

    void on_tls(std::string_view bytes) {
        BIO_write(in_, bytes.data(), static_cast<int>(bytes.size()));
        if (!handshaken_) {
            int rc = SSL_do_handshake(ssl_.get());
            if (rc == 1) {
                handshaken_ = true;
            } else if (int err = SSL_get_error(ssl_.get(), rc); err != SSL_ERROR_WANT_READ) {
                flush();  // the alert that says why
                ERR_clear_error();
                return close();
            }
        }
        if (handshaken_) {
            // Read until the client's close_notify (or its EOF): the client ends the session.
            char sink[4096];
            int n;
            while ((n = SSL_read(ssl_.get(), sink, sizeof sink)) > 0) {
            }
            int err = SSL_get_error(ssl_.get(), n);
            if (err == SSL_ERROR_ZERO_RETURN || (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)) {
                ERR_clear_error();
                flush();
                return close();
            }
        }
        flush();
    }

    void flush() {
        char* data = nullptr;
        long n = BIO_get_mem_data(out_, &data);
        if (n <= 0) return;
        write(std::string(data, static_cast<size_t>(n)));
        (void)BIO_reset(out_);
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

    SSL_CTX* ctx_;
    smtpscreen::UvHandle<uv_tcp_t> tcp_;
    std::unique_ptr<SSL, SslFree> ssl_;
    BIO* in_ = nullptr;   // owned by ssl_
    BIO* out_ = nullptr;  // owned by ssl_
    bool handshaken_ = false;
    std::string line_;
    char buffer_[16 * 1024];
};

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

std::unique_ptr<SSL_CTX, SslCtxFree> make_context(const char* cert, const char* key) {
    std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx.get(), cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_set1_groups_list(ctx.get(), "X25519:P-256") != 1) {
        std::fprintf(stderr, "starttls-floor: cannot set up TLS with %s and %s: %s\n", cert, key,
                     openssl_errors().c_str());
        return nullptr;
    }
    return ctx;
}

int usage() {
    std::fputs("usage: starttls-floor --listen 127.0.0.1:PORT --cert CHAIN.pem --key KEY.pem\n", stderr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    const char* listen = nullptr;
    const char* cert = nullptr;
    const char* key = nullptr;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view a = argv[i];
        if (a == "--listen") listen = argv[i + 1];
        else if (a == "--cert") cert = argv[i + 1];
        else if (a == "--key") key = argv[i + 1];
        else return usage();
    }
    if (listen == nullptr || cert == nullptr || key == nullptr || argc % 2 == 0) return usage();
    std::string addr(listen);
    size_t colon = addr.rfind(':');
    sockaddr_in sa{};
    if (colon == std::string::npos || uv_ip4_addr(addr.substr(0, colon).c_str(), std::atoi(addr.c_str() + colon + 1), &sa) != 0) {
        return usage();
    }
    std::signal(SIGPIPE, SIG_IGN);
    auto ctx = make_context(cert, key);
    if (!ctx) return 1;

    uv_loop_t* loop = uv_default_loop();
    SSL_CTX* raw = ctx.get();
    smtpscreen::UvHandle<uv_tcp_t> server([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }, raw);
    if (!server || uv_tcp_bind(server.get(), reinterpret_cast<const sockaddr*>(&sa), 0) != 0) {
        std::fprintf(stderr, "starttls-floor: cannot bind %s\n", listen);
        return 1;
    }
    uv_tcp_nodelay(server.get(), 1);
    int rc = uv_listen(server.stream(), 4096, [](uv_stream_t* s, int status) {
        if (status != 0) return;
        auto* c = new Connection(s->loop, static_cast<SSL_CTX*>(s->data));
        if (!c->accept(s)) delete c;
    });
    if (rc != 0) {
        std::fprintf(stderr, "starttls-floor: cannot listen on %s: %s\n", listen, uv_strerror(rc));
        return 1;
    }
    std::fprintf(stderr, "starttls-floor: listening on %s\n", listen);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
