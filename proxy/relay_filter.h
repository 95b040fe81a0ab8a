#pragma once
// The relay between a handed-off client and the backend MTA (SPEC §2 step 8, §4).
//
// With backend.handoff = xclient the backend trusts *our* address for XCLIENT (Postfix
// smtpd_authorized_xclient_hosts): a client that got "XCLIENT ADDR=127.0.0.1" through
// the relay would turn itself into a trusted relay client. So for as long as the session
// is in clear text the relay follows the SMTP dialogue in both directions, tells command
// lines apart from message content by the backend's own replies, and neutralizes the
// commands a client may never send through us.
//
// Pure: bytes in, bytes out; no I/O, no clock, no global state.
//
// WARNING for the caller: with strip_starttls = false a client's STARTTLS reaches the
// backend and, once it answers 220, everything is encrypted end to end and this filter
// can no longer see (or block) an XCLIENT inside the TLS stream. With backend.handoff =
// xclient (or none) the caller must therefore set strip_starttls = true.
//
// terminate_starttls (SPEC §3): smtpscreen itself is the client's TLS server. The filter
// removes the backend's own STARTTLS from EHLO replies and offers its own instead (until
// TLS is active), answers the client's STARTTLS itself and tells the session when to
// start the handshake; the backend never sees the STARTTLS. The filter stays pure: the
// session does the TLS and feeds the filter the decrypted plaintext. The sequence:
//   1. After every from_client()/from_backend() call the session writes to_backend and
//      to_client as usual, then looks at start_tls_now().
//   2. When start_tls_now() has turned true, that call's to_client ends with
//      "220 2.0.0 Ready to start TLS": it is the last plain text the client gets. Write
//      it, stop feeding client bytes to the filter, and run the TLS handshake on the
//      client socket. Stop reading the backend until step 3 (backend bytes that come
//      meanwhile are kept by the filter, at most max_line octets).
//      discarded_after_starttls() is how many plain-text bytes the client sent after its
//      STARTTLS line; they were dropped (CVE-2011-0411 class). Log it when not 0.
//   3. Once the handshake is done, call tls_established(); from then on feed the decrypted
//      client bytes to from_client() and encrypt everything the filter puts in to_client.
//      The client sends EHLO again, which goes to the backend as any command (the
//      backend just sees a second EHLO). Backend output kept during the handshake comes
//      out in to_client of the next from_client()/from_backend() call.
//   A handshake failure or timeout ends the session; the filter has nothing to undo.
// The filter's own replies (220, and "501 5.5.4 Syntax: STARTTLS" to a STARTTLS with an
// argument, "554 5.5.1 Error: TLS already active" to one inside TLS) come out in to_client
// in the order of the client's commands: after every reply owed for the commands sent
// before it (RFC 2920). Until then client_held() is true and later client bytes wait.
// This needs the three-argument from_client().
//
// SMTP smuggling (SPEC §4; SEC Consult 2023; Postfix smtpd_forbid_bare_newline): in the
// data phase the client's end of data is only <CR><LF>.<CR><LF> (the start of the data
// phase counts as a line start). A backend that also took a bare LF or a bare CR (a CR
// not followed by LF) as a line end would see an end of data, and a second, smuggled
// message or command after it, where the client's message goes on. So no bare LF or
// bare CR ever reaches the backend in the data phase:
//   - BareLf::Reject (default): the first bare LF or bare CR refuses the message; nothing
//     more of it goes to the backend (what went before it is plain CRLF text without an
//     end of data), and at the client's real end of data the filter answers the client
//     itself (550, then 421) and abandon_backend() turns true. See abandon_backend() for
//     what the caller must then do.
//   - BareLf::Normalize: each bare LF and each bare CR goes to the backend as CRLF. A "."
//     line is the end of data only when the client sent <CR><LF>.<CR><LF>; a line that
//     begins with "." after a bare line end is dot-stuffed ("..") on the way, and so is a
//     "." line that a bare line end closes, so normalizing never creates an end of data.
// Either way a text line over max_text_line octets (RFC 5321 §4.5.3.1.6) refuses the
// message as in Reject. The data phase is streamed: besides a held trailing CR the filter
// keeps only a few state variables, whatever the message size.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "core/config.h"   // BareLf

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
        size_t max_line = 4096;        // longest command/reply line kept whole; longer lines are still
                                       // forwarded (values below 64 are raised to 64)
        BareLf bare_lf = BareLf::Reject;   // smuggling.bare_lf (SPEC §5); see above
        size_t max_text_line = 1000;       // longest message line in octets, CRLF included
                                           // (RFC 5321 §4.5.3.1.6); 0 = no limit
    };

    // Why the filter refused a message itself (abandon_backend()).
    enum class Refusal : uint8_t { None, BareLf, BareCr, LongLine };

    explicit RelayFilter(Options options);

    // Client -> backend bytes. Appends what to forward to `to_backend`, and what the filter
    // answers the client itself (only the refusal of a message, see abandon_backend()) to
    // `to_client`.
    void from_client(std::string_view in, std::string& to_backend, std::string& to_client);
    // Transitional: the same without the refusal replies, which are lost; a caller using
    // it leaves a refused client waiting for an answer. Use the three-argument form.
    [[deprecated("use from_client(in, to_backend, to_client): refusal replies are lost")]]
    void from_client(std::string_view in, std::string& to_backend) {
        std::string lost;
        from_client(in, to_backend, lost);
    }
    // Backend -> client bytes. Appends to `to_client`; bytes of the client that were held
    // (see client_held) and are now released are appended to `to_backend` (and, if they
    // end a refused message, the filter's own replies to `to_client`, after the backend's
    // 354 that released them).
    void from_backend(std::string_view in, std::string& to_client, std::string& to_backend);

    // True while a forwarded DATA (or STARTTLS) awaits the backend's reply, or one of the
    // filter's own replies awaits the replies owed before it: the caller should stop reading
    // the client (back-pressure); bytes already given to from_client are kept and released
    // by from_backend. Bytes held behind a STARTTLS that the backend accepts are discarded,
    // not released (CVE-2011-0411 class, SPEC §3); so are the bytes after a STARTTLS the
    // filter answers itself (terminate_starttls).
    bool client_held() const { return phase_ == Phase::Held || phase_ == Phase::TlsWaiting; }
    // After a STARTTLS that the backend answered 220 (only when !strip_starttls): everything
    // is encrypted now, the filter passes bytes untouched both ways.
    bool transparent() const { return phase_ == Phase::Transparent; }
    // Client bytes kept inside the filter and not yet forwarded: the held bytes plus an
    // unfinished command line (at most max_line), plus a CR held in the data phase until
    // the next octet shows whether it is part of a CRLF.
    size_t held_bytes() const { return held_.size() + line_.size() + (pending_cr_ ? 1 : 0); }
    // The part of held_bytes() that a backend reply still to come releases to the backend
    // (bytes behind a DATA, or behind one of the filter's own replies). After the client's
    // half-close the caller passes it on to the backend only once this is 0: an
    // unfinished command line or a lone CR can no longer be completed, but these bytes
    // are whole commands (or message text) owed to the backend, like a pipelined QUIT.
    size_t held_for_backend() const { return held_.size(); }
    // Command lines (and ends of data) forwarded that the backend has not answered yet,
    // with the filter's own replies queued behind them. Once the backend has sent its
    // EOF none of them will ever be answered.
    size_t replies_owed() const { return awaiting_.size(); }
    // The backend answered the client's QUIT with 221: the SMTP dialogue is over (RFC 5321
    // §4.1.1.10), nothing more may come from the client.
    bool quit_answered() const { return quit_answered_; }

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
    bool abandon_backend() const { return phase_ == Phase::Refused; }
    Refusal refusal() const { return refusal_; }

    // terminate_starttls (see the top of this file). True from the call that appended
    // "220 2.0.0 Ready to start TLS" to to_client until tls_established(): the session
    // sends that to_client in plain text and runs the TLS handshake with the client. Every
    // client byte given to from_client meanwhile is discarded.
    bool start_tls_now() const { return phase_ == Phase::TlsStarting; }
    // The handshake is done: the filter reads commands again (the decrypted ones), offers
    // no more STARTTLS and answers another STARTTLS with 554. Only valid while
    // start_tls_now(); otherwise it does nothing.
    void tls_established();
    bool tls_active() const { return tls_active_; }
    // Client bytes discarded after the STARTTLS line before the handshake (never reset:
    // there is at most one STARTTLS per session).
    size_t discarded_after_starttls() const { return discarded_after_starttls_; }

private:
    // TlsWaiting: the client's STARTTLS awaits the replies owed before our 220; TlsStarting:
    // the 220 is out, the handshake is the session's.
    enum class Phase : uint8_t { Command, Held, Data, Transparent, Refused, TlsWaiting, TlsStarting };
    // What a forwarded command needs from its reply. The Local* entries are the filter's own
    // replies, which it sends once every entry before them is answered.
    enum class Awaits : uint8_t { Other, Ehlo, Data, StartTls, Quit, LocalStartTls, LocalSyntax, LocalTlsActive };
    enum class Verb : uint8_t { Other, Ehlo, Data, StartTls, Quit, LocalStartTls, Blocked };
    // The tail of a line longer than max_line: streamed on, or dropped.
    enum class LongLine : uint8_t { None, Forward, Drop };
    enum class DataScan : uint8_t { LineStart, InLine, Cr, Dot, DotCr };

    // Client side.
    size_t command_bytes(std::string_view in, std::string& to_backend, std::string& to_client);
    std::optional<size_t> data_bytes(std::string_view in, std::string& to_backend);
    void refuse(Refusal why);
    void new_line(bool bare);
    void begin_data();
    void begin_long_command(std::string& to_backend);
    Awaits forward_command(std::string_view line, std::string& to_backend) const;
    void command_forwarded(Awaits awaits, std::string& to_backend, std::string& to_client);
    void emit_local_replies(std::string& to_backend, std::string& to_client);
    Verb classify(std::string_view line) const;
    std::optional<size_t> end_of_data(std::string_view in);
    void release_held(std::string& to_backend, std::string& to_client);

    // Backend side.
    void start_reply();
    void ehlo_reply_bytes(std::string_view segment, bool line_ends, bool final, std::string& to_client);
    void ehlo_line_complete(bool final, std::string& to_client);
    void begin_long_ehlo_line(std::string& to_client);
    void close_stripped_ehlo_reply(std::string& to_client);
    bool strip_ehlo_line(std::string_view line) const;
    bool offer_starttls(std::string_view line) const;
    void flush_backend_stash(std::string& to_client, std::string& to_backend);
    void reply_complete(std::string_view code, std::string& to_client, std::string& to_backend);

    Options options_;
    size_t text_limit_;                          // longest line without its CRLF
    Phase phase_ = Phase::Command;

    // Client side state.
    std::string line_;                           // unfinished command line, at most max_line
    LongLine long_command_ = LongLine::None;
    Awaits long_command_awaits_ = Awaits::Other;
    std::string held_;                           // client bytes behind a DATA/STARTTLS
    // Data phase. data_scan_ follows the client's own view of the stream (only CRLF ends a
    // line) and finds its real end of data once a message is refused; until then the
    // fields below follow the backend's view of what we forward.
    DataScan data_scan_ = DataScan::LineStart;
    Refusal refusal_ = Refusal::None;
    bool pending_cr_ = false;                    // a CR at the end of the last input, not yet sent
    bool line_start_ = true;                     // nothing of the current line seen yet
    bool bare_start_ = false;                    // the current line follows a bare line end (Normalize)
    bool dot_line_ = false;                      // the line so far is the client's lone "." at a real line start
    size_t text_line_ = 0;                       // octets of the current line so far
    // One entry per command line forwarded and not yet answered, in order (RFC 2920: the
    // backend answers a pipelined group in order). AUTH keeps the count too: each 334
    // challenge answers one line and each client response line gets one reply. Bounded
    // by what the sockets let through.
    std::deque<Awaits> awaiting_;

    // Backend side state: the reply in progress.
    bool in_reply_ = false;
    bool reply_counted_ = false;                 // answers an entry of awaiting_ (not unsolicited)
    Awaits reply_awaits_ = Awaits::Other;
    std::string reply_head_;                     // first 4 bytes of the current line: code, separator
    std::string ehlo_line_;                      // current EHLO reply line, at most max_line
    std::string ehlo_pending_;                   // last kept EHLO line, not yet sent (it may become final)
    bool ehlo_first_line_ = true;
    LongLine long_reply_ = LongLine::None;
    bool starttls_after_line_ = false;           // a streamed single-line EHLO reply gets our
                                                 // STARTTLS as its final line at its end

    // terminate_starttls.
    bool tls_active_ = false;
    size_t discarded_after_starttls_ = 0;
    bool quit_answered_ = false;
    std::string backend_stash_;                  // backend bytes during the handshake, at most max_line
};

}  // namespace smtpscreen
