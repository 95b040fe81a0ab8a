#pragma once
// The relay between a handed-off client and the backend MTA (see the README's "SMTP
// smuggling" section and docs/design.md): what the session puts between the two sockets
// once the client is handed off. It composes three pieces, each in its own file:
//   - CommandPairing (proxy/command_pairing.h): which command each backend reply
//     answers, the commands a client may never send through us, the command lines too
//     long to forward, and what the client's bytes are (commands, held, message
//     content, opaque);
//   - SmugglingScanner (proxy/smuggling_scanner.h): message content, where no bare LF or
//     bare CR ever reaches the backend and only the client's own <CR><LF>.<CR><LF> ends it;
//   - EhloRewriter (proxy/ehlo_rewriter.h): the backend's EHLO reply as the client sees it.
//
// Pure: bytes in, bytes out; no I/O, no clock, no global state.
//
// WARNING for the caller: with strip_starttls = false a client's STARTTLS reaches the
// backend and, once it answers 220, everything is encrypted end to end and this filter
// can no longer see (or block) an XCLIENT inside the TLS stream. With backend.handoff =
// xclient (or none) the caller must therefore set strip_starttls = true.
//
// terminate_starttls: smtpscreen itself is the client's TLS server. The filter removes
// the backend's own STARTTLS from EHLO replies and offers its own instead (until TLS is
// active), answers the client's STARTTLS itself and tells the session when to start the
// handshake; the backend never sees the STARTTLS. The filter stays pure: the session does
// the TLS and feeds the filter the decrypted plaintext. The sequence:
//   1. After every from_client()/from_backend() call the session writes to_backend and
//      to_client as usual, then looks at start_tls_now().
//   2. When start_tls_now() has turned true, that call's to_client ends with
//      "220 2.0.0 Ready to start TLS": it is the last plain text the client gets. Write
//      it, stop feeding client bytes to the filter, and run the TLS handshake on the
//      client socket. Stop reading the backend until step 3 (backend bytes that come
//      meanwhile are kept by the filter, at most max_line octets).
//      discarded_after_starttls() is how many plain-text bytes the client sent after its
//      STARTTLS line; they were dropped (CVE-2011-0411 class). Log it when not 0.
//   3. Once the handshake is done, call tls_established() and write its to_backend (an
//      RSET: RFC 3207 §4.2, the backend forgets its state from before TLS, see
//      proxy/command_pairing.h; its reply never reaches the client) and its to_client
//      (backend output kept during the handshake); from then on feed the decrypted
//      client bytes to from_client() and encrypt everything the filter puts in to_client.
//      The client sends EHLO again, which goes to the backend as any command (the
//      backend just sees a second EHLO).
//   A handshake failure or timeout ends the session; the filter has nothing to undo.
// The filter's own replies (220, and "501 5.5.4 Syntax: STARTTLS" to a STARTTLS with an
// argument, "554 5.5.1 Error: TLS already active" to one inside TLS, "503 5.5.1 Error:
// MAIL transaction in progress" to one while the backend holds a transaction (what the
// client sent behind it is then read as commands), and in every mode
// "500 5.5.2 Line too long" to a command line over max_command_line) come out in
// to_client in the order of the client's commands: after every reply owed for the
// commands sent before it (RFC 2920). Until then client_held() is true and later client
// bytes wait.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "proxy/command_pairing.h"
#include "proxy/ehlo_rewriter.h"
#include "proxy/smuggling_scanner.h"

namespace smtpscreen {

class RelayFilter {
public:
    struct Options {
        bool strip_starttls = false;   // remove STARTTLS from EHLO replies and block the client's STARTTLS
        bool terminate_starttls = false;   // smtpscreen answers the client's STARTTLS itself (see
                                           // above); implies the backend's STARTTLS is stripped
                                           // and overrides strip_starttls for the client's
        bool tls_already_active = false;   // with terminate_starttls: the client did STARTTLS with us
                                           // before the handoff (deep tests), so none is offered and
                                           // another gets 554
        bool in_transaction = false;       // the backend accepted the deep tests' replayed MAIL:
                                           // a STARTTLS gets 503 until the transaction ends
        std::function<bool()> take_tls_slot;  // with terminate_starttls: see CommandPairing::Options
        size_t max_command_line = CommandPairing::kMaxCommandLine;   // longest command line forwarded,
                                       // its line end included; a longer one is answered
                                       // "500 5.5.2 Line too long" and dropped (see
                                       // proxy/command_pairing.h; at least 64)
        size_t max_mode_line = CommandPairing::kMaxModeLine;  // longest DATA or STARTTLS line
                                       // forwarded; a longer one is blocked (same file)
        size_t max_line = 4096;        // longest EHLO reply line kept whole; a longer one is
                                       // judged by its head and streamed (at least 64)
        BareLf bare_lf = BareLf::Reject;   // smuggling.bare_lf; see proxy/smuggling_scanner.h
        size_t max_text_line = 1000;       // longest message line in octets, CRLF included
                                           // (RFC 5321 §4.5.3.1.6); 0 = no limit
    };

    // Why the filter refused a message itself (abandon_backend()).
    using Refusal = SmugglingScanner::Refusal;

    explicit RelayFilter(Options options);

    // Client -> backend bytes. Appends what to forward to `to_backend`, and what the filter
    // answers the client itself (its own replies, see above, and the refusal of a message,
    // see abandon_backend()) to `to_client`.
    void from_client(std::string_view in, std::string& to_backend, std::string& to_client);
    // Backend -> client bytes. Appends to `to_client`; bytes of the client that were held
    // (see client_held) and are now released are appended to `to_backend` (and, if they
    // end a refused message, the filter's own replies to `to_client`, after the backend's
    // 354 that released them).
    void from_backend(std::string_view in, std::string& to_client, std::string& to_backend);

    // True while a forwarded DATA (or STARTTLS) awaits the backend's reply, or one of the
    // filter's own replies awaits the replies owed before it: the caller should stop reading
    // the client (back-pressure); bytes already given to from_client are kept and released
    // by from_backend. Bytes held behind a STARTTLS that the backend accepts are discarded,
    // not released (CVE-2011-0411 class); so are the bytes after a STARTTLS the filter
    // answers itself with 220 (terminate_starttls).
    bool client_held() const {
        return pairing_.phase() == CommandPairing::Phase::Held || pairing_.phase() == CommandPairing::Phase::TlsWaiting;
    }
    // After a STARTTLS that the backend answered 220 (only when !strip_starttls): everything
    // is encrypted now, the filter passes bytes untouched both ways.
    bool transparent() const { return pairing_.phase() == CommandPairing::Phase::Transparent; }
    // Client bytes kept inside the filter and not yet forwarded: the held bytes plus an
    // unfinished command line (at most max_command_line), plus a CR held in the data phase until
    // the next octet shows whether it is part of a CRLF.
    size_t held_bytes() const { return pairing_.held_bytes() + (scanner_.holds_cr() ? 1 : 0); }
    // The part of held_bytes() that a backend reply still to come releases to the backend
    // (bytes behind a DATA, or behind one of the filter's own replies). After the client's
    // half-close the caller passes it on to the backend only once this is 0: an
    // unfinished command line or a lone CR can no longer be completed, but these bytes
    // are whole commands (or message text) owed to the backend, like a pipelined QUIT.
    size_t held_for_backend() const { return pairing_.held_for_backend(); }
    // Command lines (and ends of data) forwarded that the backend has not answered yet,
    // with the filter's own replies queued behind them. Once the backend has sent its
    // EOF none of them will ever be answered.
    size_t replies_owed() const { return pairing_.replies_owed(); }
    // The backend answered the client's QUIT with 221: the SMTP dialogue is over (RFC 5321
    // §4.1.1.10), nothing more may come from the client.
    bool quit_answered() const { return pairing_.quit_answered(); }

    // True once the filter refused a message (see Refusal) and reached the client's real end
    // of data: it has appended to `to_client`
    //     550 5.5.2 Message contains bare <LF>            (or bare <CR>, or "Message line too long")
    //     421 4.7.0 Connection closed after bare <LF>     (same reason)
    // and the backend holds a half-sent message that must never be delivered. The caller,
    // right after the from_client/from_backend call that made it true, must:
    //   1. write that call's `to_client` to the client (its `to_backend` may be dropped);
    //   2. close the backend connection at once (Connection::close()), never sending it
    //      anything more: without an end of data the backend discards the message (Postfix:
    //      "lost connection after DATA");
    //   3. close the client after the flush (Connection::close_after_flush()) and end the
    //      session. Nothing the client pipelined after its end of data is read.
    // From then on the filter forwards nothing either way and answers nothing.
    // While a refused message is still arriving, abandon_backend() is false and nothing of
    // the message goes to the backend; refusal() already tells why.
    bool abandon_backend() const { return pairing_.phase() == CommandPairing::Phase::Refused; }
    Refusal refusal() const { return scanner_.refusal(); }

    // terminate_starttls (see the top of this file). True from the call that appended
    // "220 2.0.0 Ready to start TLS" to to_client until tls_established(): the session
    // sends that to_client in plain text and runs the TLS handshake with the client. Every
    // client byte given to from_client meanwhile is discarded.
    bool start_tls_now() const { return pairing_.phase() == CommandPairing::Phase::TlsStarting; }
    // The handshake is done: the filter reads commands again (the decrypted ones), offers
    // no more STARTTLS and answers another STARTTLS with 554. Appends the RSET for the
    // backend to `to_backend`, and the backend output kept during the handshake to
    // `to_client`. Only valid while start_tls_now(); otherwise it does nothing.
    void tls_established(std::string& to_client, std::string& to_backend);
    bool tls_active() const { return pairing_.tls_active(); }
    // Client bytes discarded after the STARTTLS line before the handshake (never reset:
    // there is at most one STARTTLS per session).
    size_t discarded_after_starttls() const { return pairing_.discarded_after_starttls(); }

    // What went to the backend so far: command lines (a blocked one counts as its
    // replacement) and ends of data.
    uint64_t commands_sent() const { return pairing_.commands_sent(); }
    uint64_t messages_sent() const { return pairing_.messages_sent(); }

private:
    void after_reply_line(CommandPairing::Completed done, std::string& to_client, std::string& to_backend);
    void flush_backend_stash(std::string& to_client, std::string& to_backend);

    Options options_;
    CommandPairing pairing_;
    SmugglingScanner scanner_;
    EhloRewriter ehlo_;
    std::string backend_stash_;   // backend bytes during the client's handshake, at most max_line
};

}  // namespace smtpscreen
