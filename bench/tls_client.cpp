#include "bench/tls_client.h"

#include <cstdio>

#include "bench/openssl_errors.h"

namespace smtpload {
namespace {

using bench::openssl_errors;

std::string group_name(SSL* ssl) {
    int nid = SSL_get_negotiated_group(ssl);
    if (nid == NID_undef) return "?";
    const char* name = SSL_group_to_name(ssl, nid);
    return name != nullptr ? name : OBJ_nid2sn(nid);
}

}  // namespace

std::unique_ptr<TlsContext> TlsContext::create(const Options& options, std::string& error) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) {
        error = "SSL_CTX_new: " + openssl_errors();
        return nullptr;
    }
    std::unique_ptr<TlsContext> out(new TlsContext(ctx, options.tls_resume));
    // TLS 1.2 only: the handshake being compared is the one issue 20 measures, and a
    // TLS 1.3 resumption is a different exchange (PSK) with a different cost.
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) != 1) {
        error = "cannot restrict the client to TLS 1.2: " + openssl_errors();
        return nullptr;
    }
    if (SSL_CTX_set_cipher_list(ctx, options.tls_ciphers.c_str()) != 1) {
        error = "--tls-ciphers \"" + options.tls_ciphers + "\": " + openssl_errors();
        return nullptr;
    }
    if (SSL_CTX_set1_groups_list(ctx, options.tls_groups.c_str()) != 1) {
        error = "--tls-groups \"" + options.tls_groups + "\": " + openssl_errors();
        return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    // Sessions are kept by hand (TlsSessionKeeper), one per loop; OpenSSL's client cache
    // would only add a lock that every thread takes.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return out;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

void TlsContext::report_failure_once(std::string_view what) {
    if (failure_reported_.exchange(true)) return;
    std::fprintf(stderr, "smtpload: first TLS handshake failure: %.*s\n", static_cast<int>(what.size()), what.data());
}

void TlsContext::record_first(SSL* ssl) {
    if (first_recorded_.exchange(true)) return;
    std::lock_guard lock(first_mutex_);
    first_.version = SSL_get_version(ssl);
    first_.cipher = SSL_get_cipher_name(ssl);
    first_.group = group_name(ssl);
}

TlsFirstHandshake TlsContext::first() const {
    std::lock_guard lock(first_mutex_);
    return first_;
}

TlsSessionKeeper::~TlsSessionKeeper() { SSL_SESSION_free(session_); }

void TlsSessionKeeper::keep_first(SSL* ssl) {
    if (session_ != nullptr) return;
    SSL_SESSION* s = SSL_get1_session(ssl);
    // A session without a ticket or id (a server that offers no resumption) is not
    // worth offering: the next handshake keeps trying for one.
    if (s != nullptr && SSL_SESSION_is_resumable(s) == 1) {
        session_ = s;
    } else {
        SSL_SESSION_free(s);
    }
}

TlsHandshake::TlsHandshake(TlsContext& context, SSL_SESSION* offer) {
    ssl_ = SSL_new(context.get());
    from_server_ = BIO_new(BIO_s_mem());
    to_server_ = BIO_new(BIO_s_mem());
    if (ssl_ == nullptr || from_server_ == nullptr || to_server_ == nullptr) {
        failure_ = "cannot allocate the TLS connection: " + openssl_errors();
        BIO_free(from_server_);
        BIO_free(to_server_);
        from_server_ = to_server_ = nullptr;
        return;
    }
    SSL_set_bio(ssl_, from_server_, to_server_);  // ssl_ owns both BIOs from here
    SSL_set_connect_state(ssl_);
    // The servers' certificates name bench.test; SNI as a real client would send it.
    SSL_set_tlsext_host_name(ssl_, "bench.test");
    if (offer != nullptr) SSL_set_session(ssl_, offer);
}

TlsHandshake::~TlsHandshake() { SSL_free(ssl_); }

TlsHandshake::Status TlsHandshake::start() {
    if (ssl_ == nullptr) return Status::Failed;
    return step();
}

TlsHandshake::Status TlsHandshake::feed(std::string_view bytes) {
    if (ssl_ == nullptr) return Status::Failed;
    if (BIO_write(from_server_, bytes.data(), static_cast<int>(bytes.size())) != static_cast<int>(bytes.size())) {
        failure_ = "BIO_write: " + openssl_errors();
        return Status::Failed;
    }
    return step();
}

TlsHandshake::Status TlsHandshake::step() {
    int rc = SSL_do_handshake(ssl_);
    if (rc == 1) return Status::Done;
    int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::InProgress;
    failure_ = "SSL_do_handshake: " + openssl_errors();
    return Status::Failed;
}

std::string TlsHandshake::take_output() {
    std::string out;
    if (to_server_ == nullptr) return out;
    char* data = nullptr;
    long n = BIO_get_mem_data(to_server_, &data);
    if (n > 0) {
        out.assign(data, static_cast<size_t>(n));
        (void)BIO_reset(to_server_);
    }
    return out;
}

void TlsHandshake::close_notify() {
    if (ssl_ != nullptr) SSL_shutdown(ssl_);
}

bool TlsHandshake::resumed() const { return ssl_ != nullptr && SSL_session_reused(ssl_) == 1; }

}  // namespace smtpload
