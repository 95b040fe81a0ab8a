#include "proxy/connection.h"

#include "proxy/handshake_queue.h"
#include "proxy/handshake_step.h"
#include "proxy/tls_stream.h"

#include <sys/socket.h>

#include <cassert>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace smtpscreen {

// The socket and, once a flush needs one, its deadline; freed when the last of its
// handles is closed. Its owner is the Connection while there is one; a socket closing
// after its flush has none, and closes itself when its last write is done or resets
// itself at its deadline. The deadline is allocated only then: most sockets close with
// nothing left to send, and an idle connection should cost as little as it can
// (docs/design.md, "Memory per connection"). So the socket is the uv_tcp_t alone, 248
// bytes in a 256-byte malloc chunk (a pointer more would take a 272-byte one): the
// handle's `data` is the owner, or, once there is a flush, the flush (tagged by the low
// bit), which holds the owner in turn.
struct Connection::Socket {
    // The flush's deadline timer, and for a socket closing after its flush what is told
    // when it is reset. Which of the two handles is still open decides when the socket
    // is freed.
    struct Flush {
        uv_timer_t timer{};
        ResetNote on_reset;
        Connection* owner = nullptr;
        bool timer_open = true;
        bool tcp_open = true;
    };

    uv_tcp_t tcp{};

    // The tcp handle is the socket's first (and only) member.
    static Socket* of(uv_handle_t* h) { return reinterpret_cast<Socket*>(h); }
    static Socket* of(uv_stream_t* s) { return of(reinterpret_cast<uv_handle_t*>(s)); }
    static Socket* of(uv_timer_t* t) { return static_cast<Socket*>(t->data); }

    Flush* flush() const {
        const auto bits = reinterpret_cast<uintptr_t>(tcp.data);
        return (bits & 1) ? reinterpret_cast<Flush*>(bits & ~uintptr_t{1}) : nullptr;
    }
    Connection* owner() const { return flush() ? flush()->owner : static_cast<Connection*>(tcp.data); }
    void set_owner(Connection* c) {
        if (Flush* f = flush()) f->owner = c;
        else tcp.data = c;
    }
    void set_flush(std::unique_ptr<Flush> f) {
        f->owner = owner();
        tcp.data = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(f.release()) | 1);
    }

    // uv_close() marks the handle closing for good: a second close() does nothing.
    bool closing() const { return uv_is_closing(reinterpret_cast<const uv_handle_t*>(&tcp)) != 0; }

    // reset: SO_LINGER 0, so close(2) sends an RST and the kernel drops what it still
    // holds to send, instead of the FIN after it (uv_tcp_close_reset refuses a socket
    // with a shutdown under way, so the option is set here).
    void close(bool reset) {
        if (closing()) return;
        set_owner(nullptr);
        if (reset) {
            uv_os_fd_t fd;
            if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp), &fd) == 0) {
                linger off{1, 0};
                ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, sizeof off);
            }
        }
        uv_close(reinterpret_cast<uv_handle_t*>(&tcp), &Socket::on_closed);
        if (Flush* f = flush()) uv_close(reinterpret_cast<uv_handle_t*>(&f->timer), &Socket::on_deadline_closed);
    }

    static void on_closed(uv_handle_t* h) {
        Socket* s = of(h);
        if (Flush* f = s->flush(); f && f->timer_open) {
            f->tcp_open = false;
            return;
        }
        s->destroy();
    }
    static void on_deadline_closed(uv_handle_t* h) {
        Socket* s = of(reinterpret_cast<uv_timer_t*>(h));
        s->flush()->timer_open = false;
        if (!s->flush()->tcp_open) s->destroy();
    }
    void destroy() {
        delete flush();
        delete this;
    }
};
namespace {

// A queued write owns its bytes until libuv is done with them.
struct WriteRequest {
    uv_write_t req{};
    std::string bytes;
};

}  // namespace

Connection::Connection(uv_loop_t* loop, ReadBuffer& buffer, ConnectionEvents& events)
    : events_(&events) {
    // Set by every connection, not only the first: uv_loop_init keeps whatever `data`
    // held before it (a loop on the stack may hold garbage), so null means nothing.
    loop->data = &buffer;
    static_assert(std::is_standard_layout_v<Socket>, "a handle of its tcp is the socket");
    static_assert(alignof(Connection) > 1 && alignof(Socket::Flush) > 1, "the low bit of tcp.data is free for the tag");
    auto* s = new Socket{};
    if (uv_tcp_init(loop, &s->tcp) != 0) {
        delete s;  // never initialised: libuv knows nothing of it
        return;
    }
    s->tcp.data = this;
    socket_ = s;
}

Connection::Connection(Connection&& other, ConnectionEvents& events) noexcept
    : socket_(std::exchange(other.socket_, nullptr)),
      events_(&events),
      pending_bytes_(std::exchange(other.pending_bytes_, 0)),
      reading_(std::exchange(other.reading_, false)),
      peer_eof_(other.peer_eof_),
      write_shut_(other.write_shut_) {
    assert(!other.tls_);
    if (socket_) socket_->set_owner(this);
}

Connection::~Connection() {
    // A handshake step still on the pool keeps the stream, and frees it when it returns.
    if (stepping()) {
        tls_->step->abandon();
    } else if (tls_ && tls_->keys_on_pool && tls_->stream.use_count() == 1) {
        tls_->steps->free_on_pool(tls_->stream->take_keys());
    }
    close();
}

uv_tcp_t* Connection::tcp() const { return &socket_->tcp; }
uv_stream_t* Connection::stream() const { return reinterpret_cast<uv_stream_t*>(&socket_->tcp); }

int Connection::accept(uv_stream_t* listener) {
    if (!socket_) return UV_ENOMEM;
    // TCP_NODELAY comes with the socket: Linux copies it from the listener (server.cpp).
    return uv_accept(listener, stream());
}


int Connection::connect(const Endpoint& to, const std::optional<Endpoint>& from) {
    if (!socket_) return UV_ENOMEM;
    if (from) {
        if (int rc = uv_tcp_bind(tcp(), from->sa(), 0); rc != 0) return rc;
    }
    auto* req = new uv_connect_t{};
    int rc = uv_tcp_connect(req, tcp(), to.sa(), &Connection::on_connect);
    if (rc != 0) delete req;
    else uv_tcp_nodelay(tcp(), 1);
    return rc;
}

void Connection::on_connect(uv_connect_t* req, int status) {
    std::unique_ptr<uv_connect_t> owned(req);
    if (Connection* self = Socket::of(req->handle)->owner()) self->events_->on_connected(*self, status);
}

void Connection::start_reading() {
    if (!socket_ || reading_ || peer_eof_ || (tls_ && tls_->eof_after_step)) return;
    if (uv_read_start(stream(), &Connection::on_alloc, &Connection::on_read) == 0) reading_ = true;
}

void Connection::stop_reading() {
    if (!socket_ || !reading_) return;
    uv_read_stop(stream());
    reading_ = false;
}

// Only a connection with an owner reads (close_after_flush stops reading first).
void Connection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
    ReadBuffer& buffer = *static_cast<ReadBuffer*>(h->loop->data);
    buf->base = buffer.bytes.data();
    buf->len = buffer.bytes.size();
}

void Connection::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    Connection* self = Socket::of(s)->owner();
    if (self == nullptr || n == 0) return;
    if (n < 0) {
        self->stop_reading();
        if (n == UV_EOF) {
            // Behind the bytes a handshake step is working on: the peer's Finished may be
            // among them, so its EOF is told once the step (and the backlog) is done.
            if (self->stepping()) {
                self->tls_->eof_after_step = true;
                return;
            }
            self->peer_eof_ = true;
            self->events_->on_peer_eof(*self);
        } else {
            self->events_->on_socket_error(*self, static_cast<int>(n));
        }
        return;
    }
    std::string_view bytes(buf->base, static_cast<size_t>(n));
    if (self->tls_) return self->read_tls(bytes);
    self->events_->on_data(*self, bytes);
}

void Connection::write(std::string_view bytes) {
    if (!socket_ || bytes.empty() || write_shut_) return;
    if (!tls_) return write_wire(bytes);  // the bulk path: no copy
    TlsStream& stream = *tls_->stream;
    if (tls_->step) {
        tls_->held.append(bytes);
        return;
    }
    if (stream.handshake_done()) return write_wire(stream.encrypt(bytes));
    if (!stream.failed()) tls_->held.append(bytes);
}

void Connection::write_wire(std::string_view bytes) {
    if (bytes.empty()) return;
    if (pending_bytes_ == 0) {
        // Nothing queued, so writing directly cannot reorder bytes.
        uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
        int n = uv_try_write(stream(), &b, 1);
        if (n > 0) bytes.remove_prefix(static_cast<size_t>(n));
        if (bytes.empty()) return;
        // A broken socket (EPIPE, ECONNRESET) is queued all the same: libuv fails the
        // write and reports it through on_write on the next turn of the loop. The read
        // side cannot be trusted to tell: a side that half-closed is no longer read, and
        // back-pressure stops reading too (a client gone after its FIN would otherwise
        // keep the session relaying into the void until the backend is done).
    }
    queue_write(bytes);
}

void Connection::queue_write(std::string_view bytes) {
    auto* w = new WriteRequest{};
    w->bytes.assign(bytes);
    uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    if (uv_write(&w->req, stream(), &b, 1, &Connection::on_write) != 0) {
        delete w;
        return;
    }
    pending_bytes_ += static_cast<uint32_t>(bytes.size());
}

void Connection::on_write(uv_write_t* req, int status) {
    std::unique_ptr<WriteRequest> w(reinterpret_cast<WriteRequest*>(req));
    Socket* s = Socket::of(req->handle);
    Connection* self = s->owner();
    if (self == nullptr) {
        // Closing after its flush: done once the last write is (or the socket failed).
        if (status < 0 || req->handle->write_queue_size == 0) s->close(false);
        return;
    }
    self->pending_bytes_ -= static_cast<uint32_t>(w->bytes.size());
    if (status < 0) {
        self->events_->on_socket_error(*self, status);
        return;
    }
    if (self->pending_bytes_ == 0) self->events_->on_drained(*self);
}

void Connection::start_deadline(Socket* s) {
    if (!s->flush()) {
        auto flush = std::make_unique<Socket::Flush>();
        if (uv_timer_init(s->tcp.loop, &flush->timer) != 0) return;
        flush->timer.data = s;
        s->set_flush(std::move(flush));
    }
    uv_timer_t* timer = &s->flush()->timer;
    // A deadline already running (a half-close, then the close) is not pushed back.
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(timer))) return;
    uv_timer_start(timer, &Connection::on_deadline, kFlushDeadlineMs, 0);
}

void Connection::on_deadline(uv_timer_t* t) {
    Socket* s = Socket::of(t);
    Connection* self = s->owner();
    if (self == nullptr) {
        if (s->flush()->on_reset) s->flush()->on_reset(s->tcp.write_queue_size);
        return s->close(true);
    }
    // A half-close that did not get out: the Connection is closed, and its owner told.
    self->socket_ = nullptr;
    self->reading_ = false;
    s->close(true);
    self->events_->on_socket_error(*self, UV_ETIMEDOUT);
}

void Connection::shutdown_after_flush() {
    if (!socket_ || write_shut_) return;
    send_close_notify();
    write_shut_ = true;
    // libuv sends the FIN once every queued write is done, so nothing is cut off.
    auto* req = new uv_shutdown_t{};
    if (uv_shutdown(req, stream(), &Connection::on_shutdown) != 0) {
        delete req;
        return;
    }
    start_deadline(socket_);
}

void Connection::on_shutdown(uv_shutdown_t* req, int status) {
    std::unique_ptr<uv_shutdown_t> owned(req);
    Socket* s = Socket::of(req->handle);
    // UV_ECANCELED: the socket was closed meanwhile, and close(2) sent the FIN.
    if (s->closing() || status == UV_ECANCELED) return;
    // The FIN is the kernel's now: the flush is over.
    if (Socket::Flush* f = s->flush()) uv_timer_stop(&f->timer);
    if (status >= 0) return;
    if (Connection* self = s->owner()) self->events_->on_socket_error(*self, status);
}

void Connection::close_after_flush(ResetNote note) {
    if (!socket_) return;
    stop_reading();
    if (!write_shut_) send_close_notify();
    Socket* s = std::exchange(socket_, nullptr);
    s->set_owner(nullptr);
    // close(2) sends the FIN after whatever the kernel still holds to send; a
    // shutdown(2) first would cost a system call and change nothing on the wire.
    if (pending_bytes_ == 0) return s->close(false);
    start_deadline(s);
    if (note && s->flush()) s->flush()->on_reset = std::move(note);
}

void Connection::close() {
    if (Socket* s = std::exchange(socket_, nullptr)) s->close(false);
    reading_ = false;
}

// ---------------------------------------------------------------- TLS

void Connection::start_tls(std::unique_ptr<TlsStream> stream, HandshakeQueue& steps, int step_nice) {
    if (!socket_ || tls_) return;
    tls_ = std::make_unique<Tls>();
    tls_->stream = std::move(stream);
    tls_->steps = &steps;
    tls_->step_nice = step_nice;
    // The first step has no peer bytes to work on: at most a ClientHello to write (the
    // backend leg), no public-key operation. It runs here.
    advance_handshake();
}

bool Connection::tls_handshaking() const {
    return tls_ && (tls_->step != nullptr || (!tls_->stream->handshake_done() && !tls_->stream->failed()));
}

// The pattern of proxy/tls_stream.h: feed, advance, read, and after every step put what
// the stream made (handshake messages, alerts) on the wire. An event may close the
// socket or hand the connection to another owner: each step looks again.
void Connection::read_tls(std::string_view ciphertext) {
    if (tls_->step) {
        // The stream is the pool thread's: keep the bytes for when the step returns. Past
        // the stream's own bound, stop reading; feeding the backlog then fails the same way
        // feeding the stream directly would have.
        tls_->backlog.append(ciphertext);
        if (tls_->backlog.size() > TlsStream::kMaxCiphertextIn) stop_reading();
        return;
    }
    if (!tls_->stream->feed_ciphertext(ciphertext)) return tls_failed(TlsFailure::Overflow);
    if (!tls_->stream->handshake_done()) return advance_handshake();
    read_tls_records();
}

// Every step without a public-key operation runs here, on the loop: all of a resumed
// handshake, and a full one's hellos, certificate and Finished messages. The loop
// thread's turn costs microseconds there, where a trip to the pool and back costs a
// thread wake-up and a hand-back through the loop's eventfd (docs/design.md, "TLS").
void Connection::advance_handshake() { handshake_step_done(tls_->stream->handshake(TlsStream::Steps::Cheap)); }

// A step with a public-key operation, and the steps after it until the handshake needs
// the peer again, go to the pool (proxy/handshake_step.h).
void Connection::run_handshake_step() {
    // The key exchange is one of the steps that come here: the session's keys will be
    // derived on the pool, in a pool thread's malloc arena (HandshakeQueue::free_on_pool).
    tls_->keys_on_pool = true;
    tls_->step = HandshakeStep::start(*tls_->steps, tls_->stream, tls_->step_nice, [this](TlsStream::Handshake result) {
        tls_->step = nullptr;
        if (!socket_) return;
        handshake_step_done(result);
        if (socket_ && !tls_->step && tls_->eof_after_step) {
            tls_->eof_after_step = false;
            peer_eof_ = true;
            events_->on_peer_eof(*this);
        }
    });
    // A pool without a thread (none could be started): the step runs right here.
    if (!tls_->step) handshake_step_done(tls_->stream->handshake(TlsStream::Steps::All));
}

// After steps on the loop or on the pool: the stream is the loop's. What the steps made
// goes on the wire, then the bytes read while a step was on the pool go to the stream.
void Connection::handshake_step_done(TlsStream::Handshake step) {
    // Only the loop's steps stop here; what is read meanwhile waits in the backlog. The
    // messages made so far (a ServerHello and Certificate) wait in the stream for the
    // pool's (ServerKeyExchange, ServerHelloDone): one write for the flight, and the
    // peer can do nothing with half of it.
    if (step == TlsStream::Handshake::NeedPool) return run_handshake_step();
    flush_tls();  // the handshake's messages, or the alert on failure
    if (step == TlsStream::Handshake::Failed) {
        tls_->backlog.clear();
        return tls_failed(TlsFailure::Handshake);
    }
    if (!tls_->backlog.empty()) {
        // Past the bound (reading stopped then), the feed fails: an Overflow as ever.
        const std::string bytes = std::exchange(tls_->backlog, {});
        if (!tls_->stream->feed_ciphertext(bytes)) return tls_failed(TlsFailure::Overflow);
        if (step == TlsStream::Handshake::NeedMore) return advance_handshake();
    }
    if (step == TlsStream::Handshake::NeedMore) return;
    if (!tls_->held.empty()) write_wire(tls_->stream->encrypt(std::exchange(tls_->held, {})));
    events_->on_tls_ready(*this);
    // A resumed client's EHLO can arrive with its Finished, or in the backlog.
    if (socket_) read_tls_records();
}

void Connection::read_tls_records() {
    std::string plaintext;
    const bool open = tls_->stream->read_plaintext(plaintext);
    flush_tls();
    if (!plaintext.empty()) {
        events_->on_data(*this, plaintext);
        if (!socket_) return;
    }
    if (open) return;
    stop_reading();
    if (!tls_->stream->closed()) return tls_failed(TlsFailure::Record);
    // close_notify: the peer's half-close, as a FIN is (docs/design.md, "Half-close").
    peer_eof_ = true;
    events_->on_peer_eof(*this);
}

void Connection::flush_tls() {
    std::string ciphertext;
    tls_->stream->take_ciphertext(ciphertext);
    write_wire(ciphertext);
}

// Each TLS leg ends with a close_notify (RFC 5246 §7.2.1) so that the peer can tell a
// complete session from a truncated one. A stream not (or no longer) open sends none.
void Connection::send_close_notify() {
    if (!tls_ || tls_->step || !tls_->stream->handshake_done()) return;
    tls_->stream->close_notify();
    flush_tls();
}

void Connection::tls_failed(TlsFailure failure) {
    stop_reading();
    tls_->held.clear();
    events_->on_tls_failed(*this, failure);
}

std::optional<Endpoint> Connection::peer() const {
    if (!socket_) return std::nullopt;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(tcp(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

std::optional<Endpoint> Connection::local() const {
    if (!socket_) return std::nullopt;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getsockname(tcp(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace smtpscreen
