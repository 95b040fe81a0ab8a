#pragma once
// The client side of a TLS 1.2 handshake for the starttls and tls roles: OpenSSL on
// memory BIOs, so that the session's own libuv reads and writes carry the records and
// one event loop drives any number of handshakes. OpenSSL, not the mbedTLS that
// smtpscreen uses: the client's share of each handshake (X25519, the server's signature)
// must stay small next to the server's on a machine whose cores both sides share.
#include <openssl/ssl.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "bench/options.h"

namespace smtpload {

// What the first completed handshake of the run negotiated, so that a script can check
// that every server it compares used the same suite and group.
struct TlsFirstHandshake {
    std::string version;
    std::string cipher;
    std::string group;
};

// The SSL_CTX that every thread's handshakes share (SSL_new on one context is
// thread-safe): TLS 1.2 only, --tls-ciphers, --tls-groups, no certificate check (the
// bench's servers use throwaway self-signed certificates).
class TlsContext {
public:
    // nullptr and error set when OpenSSL refuses the options (an unknown cipher or group).
    static std::unique_ptr<TlsContext> create(const Options& options, std::string& error);
    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    SSL_CTX* get() const { return ctx_; }
    bool resume() const { return resume_; }

    // The first failure's reason goes to stderr once: a run of thousands of identical
    // handshake failures needs one line saying why, not thousands.
    void report_failure_once(std::string_view what);
    void record_first(SSL* ssl);
    TlsFirstHandshake first() const;

private:
    TlsContext(SSL_CTX* ctx, bool resume) : ctx_(ctx), resume_(resume) {}

    SSL_CTX* ctx_;
    const bool resume_;
    std::atomic<bool> failure_reported_{false};
    std::atomic<bool> first_recorded_{false};
    mutable std::mutex first_mutex_;
    TlsFirstHandshake first_;
};

// Per event loop (--tls-resume): the session of the loop's first completed handshake,
// offered by every later one, as a client that comes back with its ticket.
class TlsSessionKeeper {
public:
    TlsSessionKeeper() = default;
    ~TlsSessionKeeper();
    TlsSessionKeeper(const TlsSessionKeeper&) = delete;
    TlsSessionKeeper& operator=(const TlsSessionKeeper&) = delete;

    SSL_SESSION* session() const { return session_; }
    void keep_first(SSL* ssl);

private:
    SSL_SESSION* session_ = nullptr;
};

// One connection's handshake. Bytes from the server go in through feed(), bytes for the
// server come out of take_output().
class TlsHandshake {
public:
    enum class Status { InProgress, Done, Failed };

    TlsHandshake(TlsContext& context, SSL_SESSION* offer);
    ~TlsHandshake();
    TlsHandshake(const TlsHandshake&) = delete;
    TlsHandshake& operator=(const TlsHandshake&) = delete;

    Status start();  // the ClientHello
    Status feed(std::string_view bytes);
    std::string take_output();
    // After Done: a close_notify alert, so that the server sees an orderly end.
    void close_notify();

    bool resumed() const;
    SSL* ssl() const { return ssl_; }
    std::string failure() const { return failure_; }

private:
    Status step();

    SSL* ssl_ = nullptr;
    BIO* from_server_ = nullptr;  // owned by ssl_ once attached
    BIO* to_server_ = nullptr;
    std::string failure_;
};

}  // namespace smtpload
