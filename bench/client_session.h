#pragma once
// One client connection playing one role, from connect to close.
#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "bench/options.h"
#include "bench/reply_parser.h"
#include "bench/role.h"
#include "bench/stats.h"
#include "bench/tls_client.h"
#include "core/uv_handle.h"

namespace smtpload {

class ClientSession;

struct SessionResult {
    Role role = Role::Clean;
    int code = 0;  // the session's final reply code; 0: no complete reply at all
    bool ok = false;
    bool connected = false;
    std::optional<ErrorKind> error;
    uint64_t latency_us = 0;  // connect start to session end
    uint64_t bytes_sent = 0;
    int source_retries = 0;
    bool tls_done = false;     // starttls, tls: the handshake completed
    bool tls_resumed = false;  // ... by resuming the offered session
};

// What a session needs from the event loop that runs it.
class SessionHost {
public:
    virtual uv_loop_t* loop() = 0;
    virtual const Options& options() const = 0;
    virtual std::string_view message() const = 0;
    virtual uint32_t next_source(Role role) = 0;
    virtual uv_buf_t read_buffer() = 0;
    // starttls, tls: the run's TLS settings, and this loop's session to offer (--tls-resume).
    virtual TlsContext& tls() = 0;
    virtual TlsSessionKeeper& tls_sessions() = 0;
    virtual void session_connected() = 0;
    // Called exactly once per session. The host destroys the session later, never inside
    // this call: the session's own callback is still on the stack.
    virtual void session_done(ClientSession& session, const SessionResult& result) = 0;

protected:
    ~SessionHost() = default;
};

class ClientSession {
public:
    ClientSession(SessionHost& host, Role role, size_t slot);
    ClientSession(const ClientSession&) = delete;
    ClientSession& operator=(const ClientSession&) = delete;

    void start();
    void run_ending();  // the run's duration is over: an idle session stops holding
    void abort();       // the run's hard deadline: counts as a timeout
    size_t slot() const { return slot_; }
    bool done() const { return step_ == Step::Done; }

private:
    enum class Step {
        Connecting, Greeting, Ehlo, Mail, Rcpt, Data, Body, Quit, AwaitClose, Bot, Holding, StartTls, Handshake, Done
    };

    int open_and_connect(uint32_t source);
    void connect_from_next_source();
    void on_connected(int status);
    void on_read(ssize_t nread);
    void on_reply(int code);
    void on_negative(int code);
    void on_closed_by_server();  // EOF, RST or a failed write
    void on_write_error();
    void on_timer();
    void on_drip();
    void begin_tls();
    void on_tls_bytes(std::string_view bytes);
    void on_tls_status(TlsHandshake::Status status);

    void send_command(std::string text);
    void write_owned(std::string text);
    void write_message();

    void finish();
    void fail(ErrorKind kind);
    void arm_timer(Millis after);

    SessionHost& host_;
    const Role role_;
    const size_t slot_;
    Step step_ = Step::Connecting;
    uint64_t started_ns_ = 0;
    bool ending_ = false;       // run_ending() came before the idle session was holding
    bool held_to_end_ = false;  // idle: we let go (hold over, run over), not the server
    bool heard_ = false;        // the server sent something: it accepted us, not only the kernel
    int outcome_ = 0;      // the reply that decided the session (250 after DATA, or a refusal)
    int last_code_ = 0;
    SessionResult result_;
    ReplyParser replies_;
    std::string drip_;  // slow role: the rest of the command being sent a byte at a time
    std::unique_ptr<TlsHandshake> tls_;  // starttls, tls: from the handshake's start
    smtpscreen::UvHandle<uv_tcp_t> tcp_;
    smtpscreen::UvHandle<uv_timer_t> timer_;
    smtpscreen::UvHandle<uv_timer_t> drip_timer_;  // slow role only
};

}  // namespace smtpload
