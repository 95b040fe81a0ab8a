#pragma once
// Which command each backend reply answers, and what that makes of the client's next
// bytes: the relay's command/reply pairing.
//
// With backend.handoff = xclient the backend trusts *our* address for XCLIENT (Postfix
// smtpd_authorized_xclient_hosts): a client that got "XCLIENT ADDR=127.0.0.1" through
// the relay would turn itself into a trusted relay client. So for as long as the session
// is in clear text the relay follows the SMTP dialogue in both directions, tells command
// lines apart from message content by the backend's own replies, and neutralizes the
// commands a client may never send through us (XCLIENT, XFORWARD, BDAT, PROXY, and
// STARTTLS when told to).
//
// A command line is forwarded only whole, and only when it is at most max_line octets
// long: a longer one is answered here ("500 5.5.2 Line too long", in its place in the
// reply order) and discarded up to its LF, so no part of it ever reaches the backend.
// Judging an over-long line by its head and forwarding its tail is not safe: Exim reads
// the octets after its 16,384th as a new command (smtp_read_command), so the tail of
// one line the relay let through as "NOOP" would be run as XCLIENT, DATA, BDAT or
// STARTTLS behind the relay's back. See kMaxCommandLine for the limit.
//
// The backend answers a pipelined group in order (RFC 2920), so one queue entry per
// command line in flight says what each reply answers: an EHLO's reply is rewritten
// (EhloRewriter), a 354 to DATA turns the client's bytes into message content
// (SmugglingScanner), a 220 to STARTTLS makes the stream opaque. Until such a reply
// comes, the client's bytes after the DATA or STARTTLS are held: only the reply tells
// whether they are commands.
//
// terminate_starttls: smtpscreen is the client's TLS server. The client's STARTTLS never
// reaches the backend; it is answered here ("220 2.0.0 Ready to start TLS", or "501 5.5.4
// Syntax: STARTTLS" to one with an argument, "554 5.5.1 Error: TLS already active" to one
// inside TLS, "503 5.5.1 Error: MAIL transaction in progress" to one inside a mail
// transaction, "454 4.7.0 TLS not available due to temporary reason" when
// take_tls_slot says no: tls.max_pending_handshakes), in the order of the client's commands: after every reply owed for the
// commands sent before it. Until then the client's later bytes are held; after the 220
// they are discarded, after a refusal they are commands again.
//
// RFC 3207 §4.2: after the handshake both sides forget what they knew before it. The
// backend never saw the STARTTLS, so it would keep a sender given in clear (which a man
// in the middle could have sent) for the TLS session. Hence the two rules: no STARTTLS
// while the backend holds a transaction (the pairing follows it from the replies: a 2xx
// to MAIL opens one; a 2xx to RSET, HELO or EHLO and any reply to the end of data close
// it), and an RSET to the backend right after the handshake (tls_established), whose
// reply is the pairing's own and never reaches the client.
//
// Pure: bytes in, bytes out; no I/O, no clock, no global state (take_tls_slot asks the
// session).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

namespace smtpscreen {

class CommandPairing {
public:
    struct Options {
        bool strip_starttls = false;       // block the client's STARTTLS
        bool terminate_starttls = false;   // answer the client's STARTTLS here (see above)
        bool tls_already_active = false;   // with terminate_starttls: the client did STARTTLS
                                           // with us before the handoff
        bool in_transaction = false;       // the backend holds a mail transaction from the
                                           // start (the deep tests' replayed MAIL it accepted)
        size_t max_line = kMaxCommandLine;  // longest command line forwarded, its LF included
                                            // (at least 64)
        // Longest DATA or STARTTLS line forwarded, its LF included (see kMaxModeLine).
        size_t max_mode_line = kMaxModeLine;
        // With terminate_starttls: asked right before our 220; false refuses with 454
        // instead. Unset: always yes.
        std::function<bool()> take_tls_slot;
    };

    // RFC 4954 §4 makes servers take SASL responses (client lines in the command phase) of
    // 12,288 octets of base64, Postfix's smtpd_sasl_response_limit too; with its CRLF that
    // is the longest line a client may need. It stays below every backend's point of
    // splitting a line in two: Exim's 16,384 octets (SMTP_CMD_BUFFER_SIZE); Postfix (since
    // 2.9) never splits one, it reads line_length_limit (2,048) octets of a command and
    // skips the rest up to the LF, so the verb both judge is the same.
    static constexpr size_t kMaxCommandLine = 12288 + 2;

    // ...but Postfix judges only those first 2,048 octets: a line whose verb comes after
    // 2,048 blanks is an empty command to Postfix and DATA to Exim, and "DATA" followed by
    // 2,048 blanks and an argument is DATA to Postfix and a syntax error to Exim. The
    // pairing waits for the backend's reply either way, so neither lets a client through,
    // but a backend must never read a line otherwise than the relay does. So a command
    // line whose verb starts after kMaxVerbStart octets of white space, and a DATA or
    // STARTTLS line (the lines whose reply changes what the client's next bytes are)
    // over max_mode_line octets, RFC 5321's command line limit (§4.5.3.1.4), are blocked
    // like XCLIENT: no MTA would send either.
    static constexpr size_t kMaxVerbStart = 32;
    static constexpr size_t kMaxModeLine = 512;

    // What the client's next bytes are, as far as the replies so far tell.
    enum class Phase : uint8_t {
        Command,       // command lines (command_bytes)
        Held,          // behind a DATA or STARTTLS awaiting its reply, or behind our own
                       // reply awaiting those owed before it: kept (hold)
        Data,          // message content, up to the client's end of data
        Transparent,   // after the backend's 220 to STARTTLS: encrypted, passed untouched
        Refused,       // a message was refused: nothing more goes either way
        TlsWaiting,    // our STARTTLS awaits the replies owed before it: kept (hold),
                       // discarded after our 220, commands again after our refusal
        TlsStarting,   // our 220 is out, the handshake is the session's: discarded
    };

    // One piece of backend output, never more than one line (see reply_piece).
    struct ReplyPiece {
        bool starts_reply = false;   // the first bytes of a reply
        bool answers_ehlo = false;   // the reply answers an EHLO the client sent
        bool line_ends = false;      // the piece ends with the line's LF
        bool final = false;          // ... and that line is the reply's last
        bool ours = false;           // the reply answers the pairing's own RSET: not the client's
        std::string_view head;       // the line's first (up to) 4 octets so far: code, separator
    };

    // What a completed line of backend output changed.
    struct Completed {
        bool data_begins = false;    // a 354 to DATA: message content follows
        bool release_held = false;   // the held client bytes are to be read again, now (take_held)
    };

    explicit CommandPairing(Options options);

    Phase phase() const { return phase_; }

    // Client side.
    // Command-phase bytes: splits them into lines (CRLF or bare LF: the backend takes both
    // as a line end), forwards each (or its blocked form) to `to_backend` and queues what
    // its reply must be; the pairing's own replies go to `to_client`. Stops when the phase
    // changes; returns the bytes consumed.
    size_t command_bytes(std::string_view in, std::string& to_backend, std::string& to_client);
    // Client bytes in the Held and TlsWaiting phases.
    void hold(std::string_view in) { held_.append(in); }
    std::string take_held();
    // Client bytes in the TlsStarting phase (and those held in TlsWaiting once our 220 is
    // out): RFC 3207 §4.2 / CVE-2011-0411, what the client sent after STARTTLS and before
    // the handshake is plain text that a man in the middle may have injected into what
    // will look like the TLS session.
    void discard_after_starttls(size_t n) { discarded_after_starttls_ += n; }
    // The client's end of data went to the backend: its reply (the message's fate) is owed.
    void message_ended();
    // The message was refused: the backend is abandoned, nothing more is owed.
    void message_refused() { phase_ = Phase::Refused; }
    // Held client bytes plus an unfinished command line.
    size_t held_bytes() const { return held_.size() + line_.size(); }
    // The held client bytes alone: whole commands (or message text) that a reply still
    // to come releases to the backend.
    size_t held_for_backend() const { return held_.size(); }
    // Command lines (and ends of data) forwarded and not answered yet, with our own
    // replies queued behind them.
    size_t replies_owed() const { return awaiting_.size(); }
    // The backend answered the client's QUIT with 221 (RFC 5321 §4.1.1.10).
    bool quit_answered() const { return quit_answered_; }
    // What went to the backend so far: command lines (a blocked one counts as its
    // replacement) and ends of data.
    uint64_t commands_sent() const { return commands_sent_; }
    uint64_t messages_sent() const { return messages_sent_; }

    // Backend side.
    // Backend bytes up to and including an LF, or up to the end of the input.
    ReplyPiece reply_piece(std::string_view segment);
    // After a piece with line_ends: completes the reply if the line was its last, and sends
    // the pairing's own replies that are now next in line.
    Completed line_complete(std::string& to_client);

    // terminate_starttls: the handshake after our 220 is done; commands are read again.
    void tls_established();
    // Right after tls_established: appends the RSET that makes the backend forget its
    // state from before TLS (RFC 3207 §4.2) to `to_backend`; its reply is ours (ReplyPiece::ours).
    void reset_backend(std::string& to_backend);
    bool tls_active() const { return tls_active_; }
    // The backend holds a mail transaction, as far as the replies so far tell.
    bool in_transaction() const { return in_transaction_; }
    size_t discarded_after_starttls() const { return discarded_after_starttls_; }

private:
    // What a forwarded command needs from its reply. The Local* entries are our own
    // replies, which go out once every entry before them is answered.
    // OwnReset is the RSET the pairing itself sent after the handshake.
    enum class Awaits : uint8_t {
        Other, Ehlo, Helo, Mail, Rset, Data, EndOfData, StartTls, Quit, OwnReset,
        LocalStartTls, LocalSyntax, LocalTlsActive, LocalTooLong
    };
    enum class Verb : uint8_t { Other, Ehlo, Helo, Mail, Rset, Data, StartTls, Quit, LocalStartTls, Blocked };

    Awaits forward_command(std::string_view line, std::string& to_backend);
    void line_forwarded();
    void command_forwarded(Awaits awaits, std::string& to_client);
    Verb classify(std::string_view line) const;
    Completed reply_complete(std::string_view code, std::string& to_client);
    void track_transaction(Awaits awaits, std::string_view code);
    bool emit_local_replies(std::string& to_client);
    static std::string_view local_reply(Awaits awaits);

    Options options_;
    Phase phase_ = Phase::Command;

    // Client side.
    std::string line_;                           // unfinished command line, at most max_line
    bool discarding_ = false;                    // inside a line over max_line, up to its LF
    uint64_t commands_sent_ = 0;
    uint64_t messages_sent_ = 0;
    std::string held_;                           // client bytes in the Held phase
    // One entry per command line forwarded and not yet answered, in order (RFC 2920: the
    // backend answers a pipelined group in order). AUTH keeps the count too: each 334
    // challenge answers one line and each client response line gets one reply. Bounded
    // by what the sockets let through.
    std::deque<Awaits> awaiting_;

    // Backend side: the reply in progress.
    bool in_reply_ = false;
    bool reply_counted_ = false;                 // answers an entry of awaiting_ (not unsolicited)
    Awaits reply_awaits_ = Awaits::Other;
    std::string reply_head_;                     // first 4 octets of the current line

    bool tls_active_ = false;
    bool in_transaction_ = false;
    size_t discarded_after_starttls_ = 0;
    bool quit_answered_ = false;
};

}  // namespace smtpscreen
