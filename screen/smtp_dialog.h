#pragma once
// The SMTP server smtpscreen speaks itself before any handoff, one engine for every
// mode (docs/design.md, "The SMTP dialog"):
//   Enforce  a client that failed a test under the `enforce` action: every command is
//            answered correctly and every RCPT TO is rejected with the failed test's
//            reply and postscreen's NOQUEUE line; never handed off.
//   Deep     the deep protocol tests: after the final "220 " greeting, SMTP up to the
//            client's first RCPT TO, with the pipelining, non-SMTP command and bare
//            newline tests (screen/deep_tests.h) run on every line; then a handoff
//            with the transaction recorded for replay (screen/smtp_transaction.h), or
//            deep.action applied to the failure (`enforce` switches to Enforce mode).
//   TlsFirst a client to be handed off at once (PASS OLD, access permit, DNSWL) when
//            tls.cert is set (tls.before_backend): the part of SMTP before TLS is
//            answered here, so that a client that only does its handshake never costs a
//            backend connection (docs/design.md, "TLS"). HELO/EHLO (offering STARTTLS),
//            STARTTLS, NOOP, RSET and QUIT are answered; any other command in clear,
//            and any command but QUIT after the handshake, hands off at once, NOT
//            answered and left unprocessed (take_unprocessed() begins with it), with
//            the HELO/EHLO from before TLS to replay. No deep test runs.
//   HealthCheck  a load balancer's own connection (PROXY v2 LOCAL, v1 UNKNOWN): 250 to
//            HELO/EHLO/NOOP/RSET, 221 to QUIT, 502 to every other command; nothing
//            is logged and nothing is ever handed off.
// The tarpit is no mode of it: a tarpitted client gets the Enforce mode (without
// STARTTLS), and the session gives each reply out slowly (edge/tarpit.h). The modes
// share the command table, the limits and the replies (screen/replies.h) and differ
// only where a row's proceed step asks which mode it is in (today: RCPT TO), or
// whether TLS is offered. Greylisting is no mode: the session asks its
// store about the Handoff's triplet and, for a new one, has the dialog refuse that RCPT
// instead (refuse_handoff) and carry on.
//
// No I/O, no clock: the session feeds it the bytes of each read and carries out the
// events it returns, in order (see DialogEvent::Kind):
//   Reply       write text to the client.
//   Violation   log text; the test failed, so no pass is cached for this session.
//               deep.action has already been applied: `ignore` carries on, `enforce`
//               turned the dialog into Enforce mode (every RCPT gets "550 5.5.1
//               Protocol error" and a NOQUEUE Log event), `tarpit` did the same and
//               stopped offering STARTTLS (the session paces what follows), `drop` is
//               followed by Reply "521 5.5.1 Protocol error" and Close.
//   Log         log text (NOQUEUE reject, COMMAND COUNT LIMIT, COMMAND TIME LIMIT).
//   LineStarted the first bytes of a command line arrived without its end: (re)start
//               the limits.command_time_limit timer now. Also restart it after every
//               Reply (waiting for the next command); a feed that only adds to a
//               started line restarts nothing, so a slow drip does not buy time.
//   StartTls    write the replies before it, then run the TLS handshake; call
//               tls_established() when it succeeds (close the session when it fails).
//               Bytes the client pipelined behind STARTTLS were discarded (CVE-2011-0411).
//   Handoff     (TlsFirst) the client's command needs the backend: replay tx's
//               HELO/EHLO (if any, from before TLS) swallowing the backend's greeting
//               and replies, then send take_unprocessed() (that command first) and splice.
//               (Deep) the client passed, or failed under `ignore`, and sent its
//               first valid RCPT TO, which is NOT answered: replay tx.replay_lines() to
//               the backend after its greeting and the handoff header, compare each
//               reply class with what the client saw (250 for HELO/EHLO and MAIL),
//               relay the backend's answer to the RCPT (or its refusal of an earlier
//               replayed command), then send take_unprocessed() to the backend and
//               splice. Cache a pass only when passed() is true. Or, when greylisting
//               refuses the recipient, call refuse_handoff() and carry out its events.
//   Close       write the replies before it, then close; text is the DISCONNECT
//               outcome ("quit", "rejected", "dropped", "timeout").
// After Handoff or Close the dialog is finished and feed() returns nothing.
//
// Every mode counts commands against limits.command_count_limit, as postscreen's one
// engine does: a client that streams commands without reading the replies is closed
// after that many, whatever it failed.
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "screen/command_reader.h"
#include "screen/ehlo_keywords.h"
#include "screen/smtp_transaction.h"
#include "screen/test_results.h"

namespace smtpscreen {

enum class DialogMode { Enforce, Deep, TlsFirst, HealthCheck };

struct DialogOptions {
    DialogMode mode = DialogMode::Deep;
    bool pipelining = false;    // deep.pipelining
    bool non_smtp = false;      // deep.non_smtp_command
    bool bare_newline = false;  // deep.bare_newline
    Action action = Action::Enforce;  // deep.action, for whichever deep test fails
    std::vector<std::string> forbidden{"CONNECT", "GET", "POST", "USER", "PASS"};  // deep.forbidden_commands
    int command_count_limit = 20;  // limits.command_count_limit; 0 or less: no limit
    std::string hostname;          // greet.hostname: in the EHLO/HELO, 221 and 421 replies
    std::string client;            // "[ip]:port", in log lines
    bool tls_available = false;    // tls.cert and tls.key are set: offer STARTTLS
    // Asked at each STARTTLS the dialog accepts, before the 220: false answers 454 4.7.0
    // (tls.max_pending_handshakes) and the dialog goes on in plain text. Unset: always.
    std::function<bool()> take_tls_slot;
    // The EHLO reply's keyword lines (deep.ehlo_keywords, as the session resolved it).
    std::vector<std::string> ehlo_keywords = postscreen_ehlo_keywords();
    // Enforce: the answer to every RCPT TO, without CRLF, e.g. "550 5.7.1 Service
    // unavailable; client [1.2.3.4] blocked using zen.example". Deep mode uses
    // "550 5.5.1 Protocol error" once a test fails under `enforce`.
    std::string reject_reply;
};

// The deep tests as the configuration sets them (greet.hostname names us in every mode).
// ehlo_keywords: what the EHLO reply offers, deep.ehlo_keywords resolved (the list
// itself, or what the backend offers when it is auto).
DialogOptions deep_options(const Config& config, std::vector<std::string> ehlo_keywords, std::string client,
                           bool tls_available);
// The enforce action's dialog for a client that failed a test before the handshake.
// It never hands off, so its EHLO reply keeps postscreen's list: it promises nothing
// a backend would have to keep.
DialogOptions enforce_options(const Config& config, std::string client, bool tls_available, std::string reject_reply);
// TLS before the backend: STARTTLS offered, no tests; ehlo_keywords as for the deep tests
// (the client may go on in clear with the backend, which must keep what was offered).
DialogOptions tls_first_options(const Config& config, std::vector<std::string> ehlo_keywords, std::string client);
// The answer to a load balancer's health check: no TLS, no tests.
DialogOptions health_check_options(const Config& config);

struct DialogEvent {
    enum class Kind { Reply, Violation, Log, LineStarted, StartTls, Handoff, Close };
    Kind kind;
    std::string text;         // Reply: CRLF-terminated lines; Violation, Log: one log line
                              // without newline; Close: the DISCONNECT outcome
    Test test = Test::Count;  // Violation: the test that failed
    SmtpTransaction tx;       // Handoff: what to replay
};

class SmtpDialog {
public:
    explicit SmtpDialog(DialogOptions options);

    // The bytes of one read from the client. Every complete line in them is handled
    // before this returns, which is what the pipelining test relies on: a line that
    // arrives in the same read behind another one was sent before our reply to it.
    // Unless the replies reach reply_room octets first: the lines left are kept, raw,
    // and has_unhandled_lines() is true until a later feed (with no new bytes, once the
    // client has read its replies) handles them, still judged by what was sent behind
    // them. So a client that pipelines without reading gets at most reply_room octets
    // of replies (and one more reply) per call.
    std::vector<DialogEvent> feed(std::string_view bytes, size_t reply_room = SIZE_MAX);
    bool has_unhandled_lines() const { return unhandled_lines_; }

    // The TLS handshake that StartTls asked for succeeded. RFC 3207 §4.2: the client
    // starts over, so the HELO/EHLO and any MAIL FROM from before it are forgotten.
    void tls_established();

    // limits.command_time_limit ran out: Log "COMMAND TIME LIMIT from [ip]:port",
    // Reply "421 4.4.2 host Error: timeout exceeded", Close "timeout".
    std::vector<DialogEvent> time_limit_exceeded();

    // A DNSBL answer that arrives after the verdict can name a higher-weighted zone;
    // the next RCPT reply names that one.
    void set_reject_reply(std::string reply) { options_.reject_reply = std::move(reply); }

    // Greylisting (edge/greylist.h) refuses the RCPT TO of the last Handoff: Log
    // "GREYLISTED [ip]:port: from=<s>, to=<r>", Reply `reply`, and the dialog is back in
    // Deep mode with the transaction open, as after any refused RCPT (another RCPT may
    // still hand off). Then feed({}) handles what the client sent behind that RCPT.
    std::vector<DialogEvent> refuse_handoff(std::string_view reply);

    // A command line has started and not ended (for the command time limit).
    bool has_partial_line() const;
    // After Handoff: what the client sent behind its RCPT TO, raw, for the backend.
    std::string take_unprocessed();

    DialogMode mode() const { return options_.mode; }
    bool failed(Test test) const { return failed_[static_cast<size_t>(test)]; }
    // No enabled deep test failed: the session may cache the deep-test passes.
    bool passed() const;
    bool enforcing() const { return options_.mode == DialogMode::Enforce; }
    bool finished() const { return state_ == State::HandedOff || state_ == State::Closed; }
    int command_count() const { return commands_; }

private:
    enum class State { Command, AwaitingTls, HandedOff, Closed };
    // What the SMTP dialog must hold before a command may go ahead (OpenSMTPD's
    // commands[] phase); a command out of its phase gets the row's 503 reply.
    enum class Needs { Nothing, Helo, Mail };
    struct CommandRow;
    static const CommandRow kCommands[];

    void handle_line(const CommandLine& line, std::string_view unread);
    bool fail(Test test, std::string log);  // false: the session is over (drop)
    void execute(const CommandLine& line, const SmtpCommand& cmd);
    bool in_phase(Needs needs) const;

    void reply(std::string_view text);
    void close(std::string outcome);
    void emit(DialogEvent::Kind kind, std::string text, Test test = Test::Count);

    // The command table's check and proceed steps. A check returns the error reply
    // (without CRLF), or an empty string when the command may go ahead; `line` is the
    // command line as sent, which MAIL and RCPT keep verbatim for the replay.
    std::string check_helo(const SmtpCommand& cmd) const;
    std::string check_starttls(const SmtpCommand& cmd) const;
    std::string check_mail(const SmtpCommand& cmd) const;
    std::string check_rcpt(const SmtpCommand& cmd) const;
    std::string check_data(const SmtpCommand& cmd) const;
    std::string check_vrfy(const SmtpCommand& cmd) const;
    std::string check_etrn(const SmtpCommand& cmd) const;
    void proceed_helo(const SmtpCommand& cmd, std::string_view line);
    void proceed_ehlo(const SmtpCommand& cmd, std::string_view line);
    void proceed_starttls(const SmtpCommand& cmd, std::string_view line);
    void proceed_mail(const SmtpCommand& cmd, std::string_view line);
    void proceed_rcpt(const SmtpCommand& cmd, std::string_view line);
    void proceed_rset(const SmtpCommand& cmd, std::string_view line);
    void proceed_noop(const SmtpCommand& cmd, std::string_view line);
    void proceed_quit(const SmtpCommand& cmd, std::string_view line);
    void reject_rcpt(const SmtpCommand& cmd);
    void hand_off(const SmtpCommand& cmd, std::string_view line);
    bool needs_backend(const SmtpCommand& cmd) const;  // TlsFirst: hand this command off
    void hand_off_command();
    void record_helo(const SmtpCommand& cmd);
    void forget_transaction();

    DialogOptions options_;
    State state_ = State::Command;
    CommandReader reader_;
    std::string input_;    // raw client bytes not yet split into lines (bounded, see feed)
    size_t consumed_ = 0;  // of input_, during feed()
    size_t line_start_ = 0;  // of input_, during feed(): where the line being handled began
    size_t replied_ = 0;  // octets of Reply text, counted against reply_room, during feed()
    bool unhandled_lines_ = false;
    std::vector<DialogEvent> out_;
    std::array<bool, kTestCount> failed_{};

    bool tls_active_ = false;
    std::string helo_verb_;             // "HELO" or "EHLO" as last sent, for the replay
    std::string helo_name_;             // its first word
    std::string proto_ = "SMTP";        // NOQUEUE's proto=: ESMTP once EHLO was seen
    bool have_mail_ = false;
    std::string mail_line_;
    std::string mail_from_;
    std::string handoff_rcpt_;  // the forward path of the RCPT that handed off
    std::string last_verb_ = "CONNECT";  // postscreen's "after CMD" before the first command
    int commands_ = 0;
};

}  // namespace smtpscreen
