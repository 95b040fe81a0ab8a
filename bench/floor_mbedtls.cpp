// bench/starttls-floor's mbedTLS side (bench/floor_tls.h): the least mbedTLS 2.28 work a
// STARTTLS handshake takes, with the settings smtpscreen uses (proxy/tls_context.cpp):
// TLS 1.2 only, X25519 then P-256, ECDHE suites with AEAD ciphers, mbedTLS's own
// session tickets (AES-256-GCM keys), one CTR-DRBG for every session. The BIO is a
// string, as smtpscreen's TlsStream has it. One thread: nothing is shared across threads,
// and nothing runs anywhere but on the loop.
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <cstring>

#include "bench/floor_tls.h"

namespace starttls_floor {

namespace {

std::string mbedtls_text(int ret) {
    char buf[256];
    mbedtls_strerror(ret, buf, sizeof buf);
    return buf;
}

constexpr int kSuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,       MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,       MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0};

// The server follows its own curve order (mbedTLS 2.28's default starts at P-521).
constexpr mbedtls_ecp_group_id kCurves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                            MBEDTLS_ECP_DP_NONE};

class MbedtlsSession : public TlsSession {
public:
    MbedtlsSession() { mbedtls_ssl_init(&ssl_); }
    ~MbedtlsSession() override { mbedtls_ssl_free(&ssl_); }
    MbedtlsSession(const MbedtlsSession&) = delete;
    MbedtlsSession& operator=(const MbedtlsSession&) = delete;

    bool setup(const mbedtls_ssl_config* conf) {
        if (mbedtls_ssl_setup(&ssl_, conf) != 0) return false;
        mbedtls_ssl_set_bio(&ssl_, this, &MbedtlsSession::send, &MbedtlsSession::recv, nullptr);
        return true;
    }

    bool on_bytes(std::string_view bytes, std::string& out) override {
        if (in_offset_ > 0) {
            in_.erase(0, in_offset_);
            in_offset_ = 0;
        }
        in_.append(bytes);
        out_ = &out;
        const bool open = advance();
        out_ = nullptr;
        return open;
    }

private:
    bool advance() {
        if (!handshaken_) {
            const int rc = mbedtls_ssl_handshake(&ssl_);
            if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return true;
            if (rc != 0) return false;  // the alert, if any, is in out_
            handshaken_ = true;
        }
        // Read until the client's close_notify (or an error): the client ends the session.
        unsigned char sink[4096];
        for (;;) {
            const int n = mbedtls_ssl_read(&ssl_, sink, sizeof sink);
            if (n > 0) continue;
            return n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE;
        }
    }

    static int send(void* self, const unsigned char* buf, size_t len) {
        static_cast<MbedtlsSession*>(self)->out_->append(reinterpret_cast<const char*>(buf), len);
        return static_cast<int>(len);
    }

    static int recv(void* self, unsigned char* buf, size_t len) {
        auto* s = static_cast<MbedtlsSession*>(self);
        const size_t n = std::min(len, s->in_.size() - s->in_offset_);
        if (n == 0) return MBEDTLS_ERR_SSL_WANT_READ;
        std::memcpy(buf, s->in_.data() + s->in_offset_, n);
        s->in_offset_ += n;
        return static_cast<int>(n);
    }

    mbedtls_ssl_context ssl_;
    std::string in_;             // ciphertext fed, from in_offset_ not yet consumed
    size_t in_offset_ = 0;
    std::string* out_ = nullptr;  // on_bytes's `out`, while it runs
    bool handshaken_ = false;
};

class MbedtlsServer : public TlsServer {
public:
    MbedtlsServer() {
        mbedtls_entropy_init(&entropy_);
        mbedtls_ctr_drbg_init(&drbg_);
        mbedtls_x509_crt_init(&chain_);
        mbedtls_pk_init(&key_);
        mbedtls_ssl_ticket_init(&ticket_);
        mbedtls_ssl_config_init(&conf_);
    }
    ~MbedtlsServer() override {
        mbedtls_ssl_config_free(&conf_);
        mbedtls_ssl_ticket_free(&ticket_);
        mbedtls_pk_free(&key_);
        mbedtls_x509_crt_free(&chain_);
        mbedtls_ctr_drbg_free(&drbg_);
        mbedtls_entropy_free(&entropy_);
    }
    MbedtlsServer(const MbedtlsServer&) = delete;
    MbedtlsServer& operator=(const MbedtlsServer&) = delete;

    bool load(const char* cert, const char* key, std::string* error) {
        auto failed = [&](const std::string& what, int ret) {
            *error = "mbedTLS: " + what + ": " + mbedtls_text(ret);
            return false;
        };
        int ret;
        if ((ret = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, nullptr, 0)) != 0)
            return failed("seeding the CTR-DRBG", ret);
        if ((ret = mbedtls_x509_crt_parse_file(&chain_, cert)) != 0) return failed(cert, ret);
        if ((ret = mbedtls_pk_parse_keyfile(&key_, key, nullptr)) != 0) return failed(key, ret);
        if ((ret = mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                               MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
            return failed("the configuration", ret);
        mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
        mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_max_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_ciphersuites(&conf_, kSuites);
        mbedtls_ssl_conf_curves(&conf_, kCurves);
        mbedtls_ssl_conf_renegotiation(&conf_, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
        if ((ret = mbedtls_ssl_conf_own_cert(&conf_, &chain_, &key_)) != 0) return failed("the certificate", ret);
        if ((ret = mbedtls_ssl_ticket_setup(&ticket_, mbedtls_ctr_drbg_random, &drbg_, MBEDTLS_CIPHER_AES_256_GCM,
                                            3600)) != 0)
            return failed("session tickets", ret);
        mbedtls_ssl_conf_session_tickets_cb(&conf_, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse, &ticket_);
        return true;
    }

    std::unique_ptr<TlsSession> session() override {
        auto s = std::make_unique<MbedtlsSession>();
        if (!s->setup(&conf_)) return nullptr;
        return s;
    }

private:
    mbedtls_entropy_context entropy_;
    mbedtls_ctr_drbg_context drbg_;
    mbedtls_x509_crt chain_;
    mbedtls_pk_context key_;
    mbedtls_ssl_ticket_context ticket_;
    mbedtls_ssl_config conf_;
};

}  // namespace

std::unique_ptr<TlsServer> mbedtls_server(const char* cert, const char* key, std::string* error) {
    auto server = std::make_unique<MbedtlsServer>();
    if (!server->load(cert, key, error)) return nullptr;
    return server;
}

}  // namespace starttls_floor
