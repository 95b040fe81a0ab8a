#pragma once
// One TCP leg (client or backend) on a libuv loop: reads into the worker's shared read
// buffer (an idle connection holds no buffer of its own), writes with uv_try_write
// first and queues only what the kernel did not take, so the common case copies nothing.
// What is queued is bounded by the callers (output_full(), docs/design.md "Bounded
// output"); a socket that closes or half-closes gets kFlushDeadline to send it, then a
// reset.
//
// The leg's TLS lives here too (docs/design.md, "TLS"): after start_tls() the
// connection moves the ciphertext between the socket and its TlsStream itself, and
// whoever owns it reads and writes plaintext only, as before the handshake. The peer's
// close_notify is that leg's half-close (on_peer_eof); a graceful close or half-close
// sends ours first. A handshake step with a public-key operation (a full handshake's
// key exchange) runs on libuv's thread pool (proxy/handshake_step.h), and the bytes read
// meanwhile wait here; every other step, a resumed handshake's all, runs on the loop.
#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/address.h"
#include "proxy/tls_stream.h"

namespace smtpscreen {

// One per loop thread: every read on that loop lands here and is consumed by the
// read callback before the next read can happen. The loop's `data` points to it (set
// by each Connection made on that loop, which all pass the same one), so that no
// connection holds a pointer to it (docs/design.md, "Memory per connection").
struct ReadBuffer {
    static constexpr size_t kSize = 64 * 1024;
    std::array<char, kSize> bytes;
};

class Connection;
class HandshakeQueue;
class HandshakeStep;

// Why a TLS leg failed; the stream's error() says how (Connection::tls()).
enum class TlsFailure {
    Handshake,  // the handshake failed; the fatal alert, if any, is queued to the peer
    Overflow,   // more ciphertext waits unconsumed than TlsStream::kMaxCiphertextIn
    Record,     // a record after the handshake (a bad MAC, a fatal alert from the peer)
};

class ConnectionEvents {
public:
    // Plaintext: the bytes read, or after start_tls() the bytes decrypted.
    virtual void on_data(Connection& conn, std::string_view bytes) = 0;
    // The peer half-closed (UV_EOF): it sends nothing more, but it may still be reading.
    // Reading has stopped for good; writing goes on (docs/design.md, "Half-close").
    virtual void on_peer_eof(Connection& conn) = 0;
    // The socket failed (a reset, a failed write): a libuv error code. Nothing more goes
    // either way.
    virtual void on_socket_error(Connection& conn, int status) = 0;
    // Every queued write has reached the kernel.
    virtual void on_drained(Connection& conn) = 0;
    virtual void on_connected(Connection& conn, int status) = 0;
    // After start_tls(): the handshake is done. Application data that came with the
    // peer's Finished follows as on_data, once this returns.
    virtual void on_tls_ready(Connection& conn) = 0;
    // After start_tls(): the TLS leg failed. Reading has stopped; the owner closes.
    virtual void on_tls_failed(Connection& conn, TlsFailure failure) = 0;

protected:
    ~ConnectionEvents() = default;
};

class Connection {
public:
    // Unsent bytes past which whoever writes to this connection stops producing more
    // until it drains (it stops reading the peer whose commands make the output). A
    // peer that reads never gets near it: the kernel's send buffer takes every reply
    // at once, and the relay queues at most one read (ReadBuffer::kSize) per direction.
    // So only a peer that has left the kernel's buffers full is held to it.
    static constexpr size_t kOutputCap = 64 * 1024;
    // How long a closing or half-closing socket may take to hand what is queued to the
    // kernel: a peer that leaves its replies unread that long is reset (SO_LINGER 0), so
    // neither its descriptor nor its queue outlives the session by more than this.
    static constexpr uint64_t kFlushDeadlineMs = 5000;
    // Told the unsent byte count when a closing socket is reset at its deadline.
    using ResetNote = std::function<void(size_t unsent)>;

    // buffer: the loop's one (see ReadBuffer).
    Connection(uv_loop_t* loop, ReadBuffer& buffer, ConnectionEvents& events);
    // Takes the socket over, for `events` from now on (the session takes its client's
    // connection from the accept handshake into itself: docs/design.md, "Memory per
    // connection"); `other` is left closed. Only before TLS: a handshake step on the pool
    // knows its connection.
    Connection(Connection&& other, ConnectionEvents& events) noexcept;
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    int accept(uv_stream_t* listener);
    int connect(const Endpoint& to, const std::optional<Endpoint>& from);

    // Does nothing once the peer's EOF has been read: there is nothing more to read.
    void start_reading();
    void stop_reading();
    bool reading() const { return reading_; }
    bool peer_eof() const { return peer_eof_; }

    // Plaintext. Ignored after shutdown_after_flush(). In TLS it is encrypted; written
    // while the handshake runs, it waits for the handshake's end.
    void write(std::string_view bytes);
    // Unsent bytes: ciphertext in TLS, so the cap holds a TLS leg the same way.
    size_t pending_bytes() const { return size_t{pending_bytes_} + (tls_ ? tls_->held.size() : 0); }
    bool output_full() const { return pending_bytes() >= kOutputCap; }
    // Half-close: sends what is queued (and in TLS a close_notify), then the FIN
    // (shutdown(2), SHUT_WR). Reading goes on and the peer may still send; every later
    // write() is dropped. When the queue is not sent within kFlushDeadlineMs the socket is
    // reset and closed, and the events get on_socket_error(UV_ETIMEDOUT).
    void shutdown_after_flush();
    bool write_shut() const { return write_shut_; }
    // Sends what is queued (and in TLS a close_notify), then closes. The socket leaves
    // this object at once: no more events are delivered, and the Connection may be
    // destroyed. When the queue is not sent within kFlushDeadlineMs the socket is reset,
    // and `note` is told.
    void close_after_flush(ResetNote note = {});
    void close();
    bool closed() const { return socket_ == nullptr; }

    // The relay takes over a backend leg that the handoff opened.
    void set_events(ConnectionEvents& events) { events_ = &events; }

    // From now on every byte read is ciphertext for `stream` (TlsStream::server for the
    // client leg after its STARTTLS, TlsStream::client for the backend leg after ours),
    // and every write() is encrypted. Call it once the reply that starts TLS is written
    // and nothing read after it has been kept (CVE-2011-0411). A client stream sends
    // its hello at once (one that fails at that first step is reported from within this
    // call). The handshake ends with on_tls_ready or on_tls_failed.
    // The steps with a public-key operation go to the pool through `steps` (the loop's
    // HandshakeQueue), at step_nice: tls.handshake_nice (proxy/handshake_step.h).
    void start_tls(std::unique_ptr<TlsStream> stream, HandshakeQueue& steps, int step_nice);
    // The leg's stream once start_tls() was called (its version and cipher for the log,
    // error() after on_tls_failed), null before. While a handshake step runs on the pool
    // (tls_handshaking() is true) the stream is not to be read: compare it with null only.
    const TlsStream* tls() const { return tls_ ? tls_->stream.get() : nullptr; }
    bool tls_handshaking() const;

    std::optional<Endpoint> peer() const;
    std::optional<Endpoint> local() const;

private:
    // The libuv handles, apart from the Connection: a socket that closes after a flush
    // outlives it (docs/design.md, "Bounded output").
    struct Socket;
    static void on_deadline(uv_timer_t* t);
    static void start_deadline(Socket* s);
    uv_stream_t* stream() const;
    uv_tcp_t* tcp() const;

    static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
    static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
    static void on_write(uv_write_t* req, int status);
    static void on_connect(uv_connect_t* req, int status);
    static void on_shutdown(uv_shutdown_t* req, int status);
    void write_wire(std::string_view bytes);
    void queue_write(std::string_view bytes);
    // TLS: ciphertext read, the handshake's next step, decrypted records, our goodbye.
    void read_tls(std::string_view ciphertext);
    void advance_handshake();
    void run_handshake_step();
    void handshake_step_done(TlsStream::Handshake result);
    void read_tls_records();
    void flush_tls();
    void send_close_notify();
    void tls_failed(TlsFailure failure);

    Socket* socket_ = nullptr;  // null once closed; frees itself when its handles are closed
    ConnectionEvents* events_;
    // The leg in TLS, from start_tls() on: made then, so that a plaintext connection (an
    // idle client's) carries none of it (docs/design.md, "Memory per connection").
    struct Tls {
        // Shared with the handshake step on the pool, which keeps the stream alive when
        // this connection goes away while the step runs.
        std::shared_ptr<TlsStream> stream;
        HandshakeStep* step = nullptr;    // the step on the pool; the stream is its thread's
        HandshakeQueue* steps = nullptr;  // the loop's way to the pool
        int step_nice = 0;                // tls.handshake_nice of the session that started TLS
        std::string backlog;              // ciphertext read while a step runs
        std::string held;                 // plaintext written while the handshake runs
        bool eof_after_step = false;      // the peer's EOF came while a step ran
        bool keys_on_pool = false;        // a step ran on the pool: the keys are freed there too
    };
    bool stepping() const { return tls_ && tls_->step; }
    std::unique_ptr<Tls> tls_;
    // Queued and unsent: bounded by kOutputCap and one read (the callers stop producing
    // at the cap), so 32 bits, and the connection takes 32 bytes.
    uint32_t pending_bytes_ = 0;
    bool reading_ = false;
    bool peer_eof_ = false;
    bool write_shut_ = false;
};

}  // namespace smtpscreen
