#pragma once
// One TCP leg (client or backend) on a libuv loop: reads into the worker's shared read
// buffer (an idle connection holds no buffer of its own), writes with uv_try_write
// first and queues only what the kernel did not take, so the common case copies nothing.
#include <uv.h>

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>

#include "core/address.h"
#include "core/uv_handle.h"

namespace smtpscreen {

// One per loop thread: every read on that loop lands here and is consumed by the
// read callback before the next read can happen.
struct ReadBuffer {
    static constexpr size_t kSize = 64 * 1024;
    std::array<char, kSize> bytes;
};

class Connection;

class ConnectionEvents {
public:
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

protected:
    ~ConnectionEvents() = default;
};

class Connection {
public:
    Connection(uv_loop_t* loop, ReadBuffer& buffer, ConnectionEvents& events);
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

    // Ignored after shutdown_after_flush().
    void write(std::string_view bytes);
    size_t pending_bytes() const { return pending_bytes_; }
    // Half-close: sends what is queued, then the FIN (shutdown(2), SHUT_WR). Reading goes
    // on and the peer may still send; every later write() is dropped.
    void shutdown_after_flush();
    bool write_shut() const { return write_shut_; }
    // Sends what is queued, then closes. The socket leaves this object at once: no more
    // events are delivered, and the Connection may be destroyed.
    void close_after_flush();
    void close();
    bool closed() const { return !tcp_; }

    // The relay takes over a backend leg that the handoff opened.
    void set_events(ConnectionEvents& events) { events_ = &events; }

    std::optional<Endpoint> peer() const;
    std::optional<Endpoint> local() const;

private:
    static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
    static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
    static void on_write(uv_write_t* req, int status);
    static void on_connect(uv_connect_t* req, int status);
    static void on_shutdown(uv_shutdown_t* req, int status);
    void queue_write(std::string_view bytes);

    UvHandle<uv_tcp_t> tcp_;
    ReadBuffer& buffer_;
    ConnectionEvents* events_;
    size_t pending_bytes_ = 0;
    bool reading_ = false;
    bool peer_eof_ = false;
    bool write_shut_ = false;
};

}  // namespace smtpscreen
