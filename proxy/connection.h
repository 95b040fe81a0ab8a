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
    // The peer closed (UV_EOF) or the socket failed (a libuv error code).
    virtual void on_peer_closed(Connection& conn, int status) = 0;
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

    void start_reading();
    void stop_reading();
    bool reading() const { return reading_; }

    void write(std::string_view bytes);
    size_t pending_bytes() const { return pending_bytes_; }
    // Sends what is queued, then half-closes and closes. The socket leaves this object at
    // once: no more events are delivered, and the Connection may be destroyed.
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
    void queue_write(std::string_view bytes);

    UvHandle<uv_tcp_t> tcp_;
    ReadBuffer& buffer_;
    ConnectionEvents* events_;
    size_t pending_bytes_ = 0;
    bool reading_ = false;
};

}  // namespace smtpscreen
