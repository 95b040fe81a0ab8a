// bench/starttls-floor's OpenSSL side (bench/floor_tls.h): an SSL on two memory BIOs.
// OpenSSL's default session tickets give resumption.
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench/floor_tls.h"
#include "bench/openssl_errors.h"

namespace starttls_floor {

namespace {

using bench::openssl_errors;

struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};
struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

class OpensslSession : public TlsSession {
public:
    explicit OpensslSession(SSL_CTX* ctx) : ssl_(SSL_new(ctx)) {}

    bool ready() {
        if (!ssl_) return false;
        BIO* in = BIO_new(BIO_s_mem());
        BIO* out = BIO_new(BIO_s_mem());
        if (in == nullptr || out == nullptr) {
            BIO_free(in);
            BIO_free(out);
            return false;
        }
        SSL_set_bio(ssl_.get(), in, out);
        SSL_set_accept_state(ssl_.get());
        in_ = in;
        out_ = out;
        return true;
    }

    bool on_bytes(std::string_view bytes, std::string& out) override {
        BIO_write(in_, bytes.data(), static_cast<int>(bytes.size()));
        bool open = true;
        if (!handshaken_) {
            const int rc = SSL_do_handshake(ssl_.get());
            if (rc == 1) {
                handshaken_ = true;
            } else if (SSL_get_error(ssl_.get(), rc) != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                open = false;  // the alert that says why is in out_
            }
        }
        if (open && handshaken_) {
            // Read until the client's close_notify (or its EOF): the client ends the session.
            char sink[4096];
            int n;
            while ((n = SSL_read(ssl_.get(), sink, sizeof sink)) > 0) {
            }
            const int err = SSL_get_error(ssl_.get(), n);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                ERR_clear_error();
                open = false;
            }
        }
        char* data = nullptr;
        const long n = BIO_get_mem_data(out_, &data);
        if (n > 0) {
            out.append(data, static_cast<size_t>(n));
            (void)BIO_reset(out_);
        }
        return open;
    }

private:
    std::unique_ptr<SSL, SslFree> ssl_;
    BIO* in_ = nullptr;   // owned by ssl_
    BIO* out_ = nullptr;  // owned by ssl_
    bool handshaken_ = false;
};

class OpensslServer : public TlsServer {
public:
    explicit OpensslServer(std::unique_ptr<SSL_CTX, SslCtxFree> ctx) : ctx_(std::move(ctx)) {}
    std::unique_ptr<TlsSession> session() override {
        auto s = std::make_unique<OpensslSession>(ctx_.get());
        if (!s->ready()) return nullptr;
        return s;
    }

private:
    std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
};

}  // namespace

std::unique_ptr<TlsServer> openssl_server(const char* cert, const char* key, std::string* error) {
    std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx.get(), cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_set1_groups_list(ctx.get(), "X25519:P-256") != 1) {
        *error = std::string("OpenSSL cannot set up TLS with ") + cert + " and " + key + ": " + openssl_errors();
        return nullptr;
    }
    return std::make_unique<OpensslServer>(std::move(ctx));
}

}  // namespace starttls_floor
