#pragma once
// The TLS half of bench/starttls-floor, once per library: OpenSSL (the floor every
// server is measured against) and mbedTLS 2.28 (the floor of the library smtpscreen is
// built on, so what smtpscreen adds to a handshake shows apart from what mbedTLS costs).
// Both make the same TLS 1.2 server: the certificate and key given, X25519 then P-256,
// ECDHE suites with AEAD ciphers, RFC 5077 session tickets, no renegotiation; the
// client's offer picks the suite. No I/O here: the caller moves the bytes.
#include <memory>
#include <string>
#include <string_view>

namespace starttls_floor {

// One client's TLS, from the first byte after "220 Ready to start TLS".
class TlsSession {
public:
    virtual ~TlsSession() = default;
    // The peer's bytes; appends to `out` what goes back on the wire (handshake
    // messages, an alert). False once the session is over: the client's close_notify
    // after the handshake, or a failed handshake. Write `out`, then close.
    virtual bool on_bytes(std::string_view in, std::string& out) = 0;
};

// The certificate, key and settings every session of one run shares.
class TlsServer {
public:
    virtual ~TlsServer() = default;
    // nullptr when the library cannot make one more (out of memory): close the client.
    virtual std::unique_ptr<TlsSession> session() = 0;
};

// nullptr and *error (naming the file and the library's reason) when the certificate
// chain or the key cannot be used.
std::unique_ptr<TlsServer> openssl_server(const char* cert, const char* key, std::string* error);
std::unique_ptr<TlsServer> mbedtls_server(const char* cert, const char* key, std::string* error);

}  // namespace starttls_floor
