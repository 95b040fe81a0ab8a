#include "proxy/connection.h"

#include <cstring>
#include <memory>
#include <string>

namespace smtpscreen {
namespace {

// A queued write owns its bytes until libuv is done with them.
struct WriteRequest {
    uv_write_t req{};
    std::string bytes;
};

Connection* owner(uv_handle_t* h) { return static_cast<Connection*>(h->data); }

// Marks a socket that no Connection owns any more and that closes once its queued
// writes are done; read-only, its address is all that is used.
const char kFlushing = 0;

void close_and_free(uv_handle_t* h) {
    if (!uv_is_closing(h)) uv_close(h, [](uv_handle_t* x) { delete reinterpret_cast<uv_tcp_t*>(x); });
}

}  // namespace

Connection::Connection(uv_loop_t* loop, ReadBuffer& buffer, ConnectionEvents& events)
    : tcp_([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }), buffer_(buffer), events_(&events) {
    if (tcp_) tcp_.get()->data = this;
}

Connection::~Connection() { close(); }

int Connection::accept(uv_stream_t* listener) {
    if (!tcp_) return UV_ENOMEM;
    // TCP_NODELAY comes with the socket: Linux copies it from the listener (server.cpp).
    return uv_accept(listener, tcp_.stream());
}


int Connection::connect(const Endpoint& to, const std::optional<Endpoint>& from) {
    if (!tcp_) return UV_ENOMEM;
    if (from) {
        if (int rc = uv_tcp_bind(tcp_.get(), from->sa(), 0); rc != 0) return rc;
    }
    auto* req = new uv_connect_t{};
    int rc = uv_tcp_connect(req, tcp_.get(), to.sa(), &Connection::on_connect);
    if (rc != 0) delete req;
    else uv_tcp_nodelay(tcp_.get(), 1);
    return rc;
}

void Connection::on_connect(uv_connect_t* req, int status) {
    std::unique_ptr<uv_connect_t> owned(req);
    if (Connection* self = owner(reinterpret_cast<uv_handle_t*>(req->handle))) {
        self->events_->on_connected(*self, status);
    }
}

void Connection::start_reading() {
    if (!tcp_ || reading_ || peer_eof_) return;
    if (uv_read_start(tcp_.stream(), &Connection::on_alloc, &Connection::on_read) == 0) reading_ = true;
}

void Connection::stop_reading() {
    if (!tcp_ || !reading_) return;
    uv_read_stop(tcp_.stream());
    reading_ = false;
}

void Connection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
    Connection* self = owner(h);
    buf->base = self->buffer_.bytes.data();
    buf->len = self->buffer_.bytes.size();
}

void Connection::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Connection* self = owner(reinterpret_cast<uv_handle_t*>(s));
    if (self == nullptr || n == 0) return;
    if (n < 0) {
        self->stop_reading();
        if (n == UV_EOF) {
            self->peer_eof_ = true;
            self->events_->on_peer_eof(*self);
        } else {
            self->events_->on_socket_error(*self, static_cast<int>(n));
        }
        return;
    }
    self->events_->on_data(*self, std::string_view(buf->base, static_cast<size_t>(n)));
}

void Connection::write(std::string_view bytes) {
    if (!tcp_ || bytes.empty() || write_shut_) return;
    if (pending_bytes_ == 0) {
        // Nothing queued, so writing directly cannot reorder bytes.
        uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
        int n = uv_try_write(tcp_.stream(), &b, 1);
        if (n > 0) bytes.remove_prefix(static_cast<size_t>(n));
        else if (n != UV_EAGAIN && n != UV_ENOSYS) return;  // broken socket: the read side reports it
        if (bytes.empty()) return;
    }
    queue_write(bytes);
}

void Connection::queue_write(std::string_view bytes) {
    auto* w = new WriteRequest{};
    w->bytes.assign(bytes);
    uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    if (uv_write(&w->req, tcp_.stream(), &b, 1, &Connection::on_write) != 0) {
        delete w;
        return;
    }
    pending_bytes_ += bytes.size();
}

void Connection::on_write(uv_write_t* req, int status) {
    std::unique_ptr<WriteRequest> w(reinterpret_cast<WriteRequest*>(req));
    auto* tcp = reinterpret_cast<uv_tcp_t*>(req->handle);
    if (tcp->data == &kFlushing) {
        if (status < 0 || req->handle->write_queue_size == 0) close_and_free(reinterpret_cast<uv_handle_t*>(tcp));
        return;
    }
    Connection* self = owner(reinterpret_cast<uv_handle_t*>(tcp));
    if (self == nullptr) return;
    self->pending_bytes_ -= w->bytes.size();
    if (status < 0) {
        self->events_->on_socket_error(*self, status);
        return;
    }
    if (self->pending_bytes_ == 0) self->events_->on_drained(*self);
}

void Connection::shutdown_after_flush() {
    if (!tcp_ || write_shut_) return;
    write_shut_ = true;
    // libuv sends the FIN once every queued write is done, so nothing is cut off.
    auto* req = new uv_shutdown_t{};
    if (uv_shutdown(req, tcp_.stream(), &Connection::on_shutdown) != 0) delete req;
}

void Connection::on_shutdown(uv_shutdown_t* req, int status) {
    std::unique_ptr<uv_shutdown_t> owned(req);
    auto* h = reinterpret_cast<uv_handle_t*>(req->handle);
    // UV_ECANCELED: the socket was closed meanwhile, and close(2) sent the FIN.
    if (status >= 0 || status == UV_ECANCELED || h->data == &kFlushing) return;
    if (Connection* self = owner(h)) self->events_->on_socket_error(*self, status);
}

void Connection::close_after_flush() {
    if (!tcp_) return;
    stop_reading();
    uv_tcp_t* tcp = tcp_.release();
    // close(2) sends the FIN after whatever the kernel still holds to send; a
    // shutdown(2) first would cost a system call and change nothing on the wire.
    if (pending_bytes_ == 0) close_and_free(reinterpret_cast<uv_handle_t*>(tcp));
    else tcp->data = const_cast<char*>(&kFlushing);
}

void Connection::close() { tcp_.close(); }

std::optional<Endpoint> Connection::peer() const {
    if (!tcp_) return std::nullopt;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(tcp_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

std::optional<Endpoint> Connection::local() const {
    if (!tcp_) return std::nullopt;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getsockname(tcp_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace smtpscreen
