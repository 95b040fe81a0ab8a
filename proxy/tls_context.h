#pragma once
// mbedTLS configurations for docs/design.md, "TLS": the server side (STARTTLS offered to clients,
// tls.cert / tls.key / tls.ciphers) and the client side (backend.tls, backend.tls_ca).
//
// A context is built once per configuration load (start and SIGHUP) and shared, through
// std::shared_ptr, by every TlsStream made from it; a stream keeps its context alive, so
// sessions in progress keep the old certificate after a reload while new ones get the new.
//
// Threads: with this mbedTLS build (MBEDTLS_THREADING_C, pthread), everything a handshake
// touches after load() is either read-only (ssl_config, certificates; ECDSA signing works
// on a copy of the key) or locks its own mutex (ctr_drbg_random, entropy, the ticket
// keys, the RSA blinding values), so ONE context may be shared by all worker threads
// (test_tls.cpp runs handshakes on four threads over one context). That is also what makes session
// resumption work with process.threads > 1: SO_REUSEPORT sends a returning client to any
// thread, and only a shared ticket key can open its ticket. kShareableAcrossThreads says
// whether the build allows it; when false, make one context per worker thread.
#include <mbedtls/config.h>
#include <mbedtls/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen {

#if defined(MBEDTLS_THREADING_C)
inline constexpr bool kShareableAcrossThreads = true;
#else
inline constexpr bool kShareableAcrossThreads = false;
#endif

// The default suite list: ECDHE (forward secrecy) with AEAD ciphers only, server order.
// Suites whose certificate type does not match the key are skipped by mbedTLS, so one
// list serves RSA and ECDSA certificates.
extern const char* const kDefaultTlsCiphers;

// Parses a comma-separated list of mbedTLS suite names ("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256")
// into mbedTLS suite ids (0-terminated, as mbedtls_ssl_conf_ciphersuites wants). Refuses
// unknown names, suites that cannot run over TLS 1.2, and weak ones (NULL, RC4, DES/3DES,
// MD5, PSK / anonymous key exchange, suites mbedTLS flags as weak). Empty `list` gives the
// default. On failure returns an empty vector and sets *error.
std::vector<int> parse_tls_ciphers(std::string_view list, std::string* error);

// mbedtls_strerror text with the code: "SSL - ... (-0x7780)".
std::string mbedtls_error_text(int mbedtls_error);

// The OpenSSL name of an mbedTLS suite ("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256" ->
// "ECDHE-RSA-AES128-GCM-SHA256"), as Postfix logs it; the mbedTLS name itself for the
// few suites OpenSSL does not have.
std::string openssl_cipher_name(std::string_view mbedtls_name);

// Server side: the certificate chain and key clients see after STARTTLS.
class TlsServerContext {
public:
    // cert_file: PEM, the server certificate first, then any intermediates (a "chain
    // file"); key_file: PEM RSA or ECDSA key, PKCS#1/SEC1/PKCS#8, unencrypted (it may be
    // the same file as cert_file). ciphers: comma list of mbedTLS suite names, empty for
    // kDefaultTlsCiphers. Checks that the key matches the first certificate and that at
    // least one suite can use that key type. Returns nullptr and sets *error on failure:
    // "tls.cert FILE: what is wrong (what to do)", "tls.key FILE: ...", "tls.ciphers: ...".
    // Reads both files on every call: on SIGHUP they must be readable by process.user.
    static std::shared_ptr<TlsServerContext> load(const std::string& cert_file, const std::string& key_file,
                                                  const std::string& ciphers, std::string* error);
    // tls.cert / tls.key as lists, pairwise (cert_files[i] with key_files[i]): at most
    // one RSA and one ECDSA pair, as Postfix's smtpd_tls_eccert_file. mbedTLS picks per
    // client: an RSA-only client gets the RSA chain. Two pairs of one key type are refused.
    // ticket_key_file: tls.ticket_key_file (proxy/tls_ticket_keys.h); empty for keys of
    // mbedTLS's own, random per context and rotated hourly.
    static std::shared_ptr<TlsServerContext> load(const std::vector<std::string>& cert_files,
                                                  const std::vector<std::string>& key_files,
                                                  const std::string& ciphers, const std::string& ticket_key_file,
                                                  std::string* error);
    ~TlsServerContext();
    TlsServerContext(const TlsServerContext&) = delete;
    TlsServerContext& operator=(const TlsServerContext&) = delete;

    // Problems that do not stop the certificate from loading, but that an administrator
    // wants to hear of at --check and at start: expired / not yet valid certificate, RSA
    // key shorter than 2048 bits.
    const std::vector<std::string>& warnings() const { return warnings_; }
    const std::string& cert_file() const { return cert_file_; }  // the first of tls.cert

    // For TlsStream: the finished configuration (read-only from here on).
    const mbedtls_ssl_config* ssl_config() const;

private:
    struct Impl;  // the mbedTLS structures, in tls_context.cpp
    TlsServerContext();
    std::unique_ptr<Impl> impl_;
    std::vector<std::string> warnings_;
    std::string cert_file_;
};

// Client side, for STARTTLS toward the backend (backend.tls = on).
class TlsClientContext {
public:
    // ca_file empty: encrypt without verifying the backend's certificate (Postfix's
    // "may": the backend is usually on loopback). ca_file set: PEM CA certificate(s); the
    // backend's chain must verify against them (MBEDTLS_SSL_VERIFY_REQUIRED) or the
    // handshake fails. ciphers as for the server; empty for the default. Errors start
    // with "backend.tls_ca FILE: ".
    static std::shared_ptr<TlsClientContext> load(const std::string& ca_file, const std::string& ciphers,
                                                  std::string* error);
    ~TlsClientContext();
    TlsClientContext(const TlsClientContext&) = delete;
    TlsClientContext& operator=(const TlsClientContext&) = delete;

    bool verifies() const { return verifies_; }

    const mbedtls_ssl_config* ssl_config() const;

private:
    struct Impl;
    TlsClientContext();
    std::unique_ptr<Impl> impl_;
    bool verifies_ = false;
};

}  // namespace smtpscreen
