#pragma once
// One TLS session with no I/O in it: the caller moves bytes between the socket and the
// stream, the stream moves them through mbedTLS. Used for the client leg (server side,
// after STARTTLS) and for the backend leg (client side, backend.tls = on); the caller is
// the leg's Connection (Connection::start_tls), which follows the pattern below.
//
// Driving it from an event loop:
//   on socket read:   stream.feed_ciphertext(bytes)   (false: over the bound, close)
//                     until handshake() == Done: call handshake(); Failed: log error(), flush, close
//                     (an event loop calls handshake(Steps::Cheap) and, on NeedPool, has
//                     handshake() run elsewhere: see "Where the steps run" below)
//                     after Done: stream.read_plaintext(out)  (false: peer closed / fatal)
//   after EVERY call: stream.take_ciphertext(wire) and write `wire` to the socket when not
//                     empty (handshake messages, alerts, records produced by write_plaintext).
//   to send:          stream.write_plaintext(text), then take_ciphertext.
//   to close:         stream.close_notify(), take_ciphertext, write, then close the socket
//                     (or only shut its write side: close_notify is TLS's half-close).
//
// The moment handshake() returns Done, call read_plaintext() at once: the peer may have
// sent application data in the same flight as its Finished (a resumed client does), and
// those bytes are already inside the stream; no further socket read will announce them.
//
// CVE-2011-0411 (STARTTLS command injection): plaintext bytes that arrived after the
// STARTTLS command line and before the handshake started are NOT TLS and must never be
// fed to this stream nor interpreted as commands after the handshake. Whoever reads the
// plaintext (the dialog, the relay filter) discards them and the session logs them; the
// stream only ever sees bytes read after the "220 Ready to start TLS" reply was queued.
// Likewise on the backend leg: anything the backend sent after its 220 to STARTTLS is
// discarded before the first feed.
//
// Memory: mbedTLS 2.28 (built without MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH) allocates one
// input and one output record buffer of ~16.7 KiB each in mbedtls_ssl_setup, whatever the
// traffic. Measured with mallinfo2 over 100 sessions: 37 KiB per server stream from
// creation, about 2 KiB more while handshaking (the handshake state, freed at Done),
// 36 KiB once established; a client stream 38-39 KiB (it keeps the peer certificate).
// A context costs ~50 KiB once. On top of that: the stream's own ciphertext-in buffer,
// bounded by kMaxCiphertextIn and empty between reads when the caller follows the
// pattern above, and ciphertext-out, which holds only what the caller has not taken.
//
// Where the steps run (docs/design.md, "TLS"): mbedTLS 2.28 advances one state per
// mbedtls_ssl_handshake_step(), and only a few states do a public-key operation, the
// milliseconds of a handshake: on the server, writing the ServerKeyExchange (the ECDHE
// key pair and its RSA or ECDSA signature) and reading the ClientKeyExchange (the ECDH
// agreement, or the RSA decryption of a static-RSA suite), and the client certificate
// and its CertificateVerify if one were asked for; on the client, checking the server's
// chain (when it verifies), its ServerKeyExchange signature, and the ClientKeyExchange
// (the ECDH key pair and agreement). handshake(Steps::Cheap) runs every other step and
// stops before one of those that has bytes to work on, answering NeedPool: the caller
// then runs handshake() (Steps::All) on another thread, which goes on until the
// handshake needs the peer again. A resumed handshake (session ticket) has none of them:
// it runs on the loop from the ClientHello to the Finished.
//
// Not thread-safe: one thread at a time, the loop's, or the pool thread that runs one
// handshake() for it (proxy/handshake_step.h); the BIO is the in_/out_ buffers, never a
// socket, so handshake() may run anywhere. Not movable: mbedTLS keeps a pointer to it for
// the BIO callbacks; hold it in a smart pointer.
#include <mbedtls/ssl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "core/address.h"
#include "proxy/tls_context.h"

namespace smtpscreen {

// A saved TLS session (the backend leg keeps the last one to resume with its ticket).
// Not synchronized: keep one per worker thread; several streams may read the same one.
class TlsSession {
public:
    TlsSession();
    ~TlsSession();
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;
    bool valid() const { return valid_; }

private:
    friend class TlsStream;
    mbedtls_ssl_session session_;
    bool valid_ = false;
};

class TlsStream {
public:
    // NeedPool: only from handshake(Steps::Cheap), the next step does a public-key
    // operation and has the bytes it needs; nothing was done about it yet.
    enum class Handshake { NeedMore, NeedPool, Done, Failed };
    // Which steps handshake() may run: All (a pool thread, or a caller that does not
    // mind the milliseconds), or Cheap (an event loop: none with a public-key operation).
    enum class Steps { All, Cheap };

    // Ciphertext buffered but not yet consumed may never exceed one maximal TLS record
    // (16 KiB plaintext + 2 KiB expansion + header) plus one socket read (64 KiB, libuv's
    // suggested size). A peer that gets beyond it is not speaking TLS at us in good faith.
    static constexpr std::size_t kMaxCiphertextIn = (16 + 2) * 1024 + 5 + 64 * 1024;

    // Server side of a session (a client did STARTTLS with us). nullptr and *error on
    // failure (allocation in mbedtls_ssl_setup).
    static std::unique_ptr<TlsStream> server(std::shared_ptr<const TlsServerContext> context, std::string* error);
    // Client side (we did STARTTLS with the backend). server_name: when not empty and the
    // context verifies, the certificate must name it, or the handshake fails (and
    // name_mismatch() is true). A host name is sent as SNI and matched by mbedTLS
    // against the certificate's DNS names (or its CN without any); an IP address is not
    // sent (RFC 6066 §3) and must be one of the certificate's subjectAltName iPAddress
    // entries (RFC 6125 §6.2.1), which mbedTLS 2.28 does not check: the stream does
    // after the handshake. Empty: the chain alone is verified. resume: a session saved by
    // save_session() from an earlier stream of the same context, offered for resumption
    // (may be nullptr).
    static std::unique_ptr<TlsStream> client(std::shared_ptr<const TlsClientContext> context,
                                             const std::string& server_name, const TlsSession* resume,
                                             std::string* error);
    ~TlsStream();
    TlsStream(const TlsStream&) = delete;
    TlsStream& operator=(const TlsStream&) = delete;

    // Bytes read from the network. False (and the stream is failed, error() says why)
    // when the unconsumed ciphertext would exceed kMaxCiphertextIn.
    bool feed_ciphertext(std::string_view bytes);
    // Appends the bytes to write to the network to `out` and empties the stream's buffer.
    void take_ciphertext(std::string& out);
    std::size_t ciphertext_pending() const { return out_.size(); }
    // The session's record keys and cipher contexts (mbedtls_ssl_transform), taken out of
    // the stream as it ends, so that the thread whose arena holds them frees them
    // (HandshakeQueue::free_on_pool); null before the handshake is done. The stream is
    // left unable to read or write, for its destructor only.
    struct KeysDeleter {
        void operator()(mbedtls_ssl_transform* keys) const;
    };
    using Keys = std::unique_ptr<mbedtls_ssl_transform, KeysDeleter>;
    Keys take_keys();
    // Room for `more` bytes of ciphertext without a reallocation: made on the loop before
    // a step goes to the pool, so that the flight the step writes lands in memory of the
    // loop's malloc arena, which the loop frees without waiting on a pool thread's
    // (proxy/handshake_step.cpp).
    void reserve_ciphertext(std::size_t more) { out_.reserve(out_.size() + more); }

    // Advances the handshake as far as the fed bytes allow (with Steps::Cheap, up to the
    // next step with a public-key operation: NeedPool). After Failed, error() names the
    // mbedTLS error and the handshake step; take_ciphertext() may still hold the fatal
    // alert mbedTLS sent, worth a best-effort write before closing.
    Handshake handshake(Steps steps = Steps::All);
    // The step mbedTLS runs next, as the log names it ("sending server key exchange"):
    // after NeedPool, the one that asked for the pool.
    const char* next_step() const;
    bool handshake_done() const { return state_ == State::Open || state_ == State::Closed; }

    // After Done: appends all decrypted application data available to `out`. Returns
    // false once the peer sent close_notify (closed() is true: the peer's half-close, it
    // sends nothing more but may still read) or on a fatal error (failed(), error() says
    // which; the caller then closes). True otherwise, even with no data.
    bool read_plaintext(std::string& out);
    // After Done, also after the peer's close_notify, until our own close_notify():
    // encrypts `text` into ciphertext for take_ciphertext(). False on error.
    bool write_plaintext(std::string_view text);
    // write_plaintext + take_ciphertext: the bytes to put on the socket for `text`.
    std::string encrypt(std::string_view text);
    // Queues a close_notify alert (take_ciphertext, write, then close the socket).
    void close_notify();

    bool closed() const { return state_ == State::Closed; }
    bool failed() const { return state_ == State::Failed; }
    const std::string& error() const { return error_; }

    // After Done:
    std::string protocol() const;  // "TLSv1.2"
    std::string cipher() const;    // mbedTLS suite name, "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"
    int cipher_bits() const;       // symmetric key bits: 128, 256
    bool resumed() const { return resumed_; }
    // Client side: the peer's certificate chain verified against the CA file.
    bool peer_verified() const;
    // Client side: a server name was given, so verification also matched it.
    bool name_checked() const { return name_checked_; }
    // Client side, after Failed: the chain may have verified, but the certificate does
    // not name server_name.
    bool name_mismatch() const { return name_mismatch_; }
    // Client side: the session to pass to client() for the next connection. False when
    // there is none (handshake not done, or server side).
    bool save_session(TlsSession& out) const;

private:
    enum class State { Handshaking, Open, Closed, Failed };
    TlsStream() = default;
    bool setup(const mbedtls_ssl_config* conf, std::string* error);
    void fail(const std::string& what, int mbedtls_error);
    // Whether the step mbedTLS runs next does a public-key operation (see "Where the
    // steps run"), and whether it has input to do it on.
    bool next_step_costly() const;
    bool input_pending() const;
    static int bio_send(void* self, const unsigned char* buf, std::size_t len);
    static int bio_recv(void* self, unsigned char* buf, std::size_t len);

    // The context must outlive ssl_ (it holds the mbedtls_ssl_config ssl_ points to):
    // members are destroyed in reverse order, so the contexts are declared first.
    std::shared_ptr<const TlsServerContext> server_context_;
    std::shared_ptr<const TlsClientContext> client_context_;
    mbedtls_ssl_context ssl_;
    bool ssl_initialized_ = false;
    bool is_client_ = false;
    bool name_checked_ = false;
    bool name_mismatch_ = false;
    std::string expected_ip_;    // server_name as an IP address: its 4 or 16 octets
    std::string server_name_;
    bool close_sent_ = false;
    bool got_bytes_ = false;           // first_bytes_ is set
    bool first_byte_is_text_ = false;  // a letter where a TLS record type belongs
    std::string first_bytes_;          // start of the peer's first bytes, for errors
    State state_ = State::Handshaking;
    bool resumed_ = false;
    bool saw_certificate_ = false;
    std::string in_;             // ciphertext fed, not yet consumed by mbedTLS
    std::size_t in_offset_ = 0;  // consumed prefix of in_
    std::string out_;            // ciphertext produced, not yet taken
    std::string error_;
};

// Postfix's smtpd line after a handshake with a client:
// "Anonymous TLS connection established from [ip]:port: TLSv1.2 with cipher
//  ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)" (OpenSSL suite names, as Postfix prints).
std::string postfix_tls_log_line(const Endpoint& client, const TlsStream& stream);
// Postfix's smtp line for the backend leg: "Verified TLS connection established to
// [ip]:port: ..." when the chain verified against backend.tls_ca and a server name was
// matched, "Trusted" for the chain alone, "Untrusted" without verification.
std::string postfix_tls_backend_log_line(const Endpoint& backend, const TlsStream& stream);

}  // namespace smtpscreen
