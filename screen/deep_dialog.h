#pragma once
// The deep-test SMTP engine (SPEC §2 step 6): after the final "220 " greeting smtpscreen
// speaks SMTP itself up to the client's first RCPT TO, runs the pipelining, non-SMTP
// command and bare newline tests (screen/deep_tests.h) on every line, and then either
// hands the client off with its transaction recorded for replay (screen/smtp_transaction.h)
// or acts on the failure as deep.action says. No I/O, no clock: the session feeds it
// the bytes of each read and carries out the events it returns, in order.
//
// Commands go through one table, OpenSMTPD-style: each row is checked first (syntax,
// state, limits) and carried out only when the check passes.
//
// What the session does with the events (see DeepEvent::Kind):
//   Reply       write text to the client.
//   Violation   log text; the test failed, so no pass is cached for this session.
//               deep.action has already been applied: `ignore` carries on, `enforce`
//               turns the engine into the EnforceDialog responder (every RCPT gets
//               "550 5.5.1 Protocol error" and a NOQUEUE Log event, never a handoff),
//               `drop` is followed by Reply "521 5.5.1 Protocol error" and Close.
//   Log         log text (NOQUEUE reject, COMMAND COUNT LIMIT, COMMAND TIME LIMIT).
//   LineStarted the first bytes of a command line arrived without its end: (re)start
//               the limits.command_time_limit timer now. Also restart it after every
//               Reply (waiting for the next command); a feed that only adds to a
//               started line restarts nothing, so a slow drip does not buy time.
//   StartTls    write the replies before it, then run the TLS handshake; call
//               tls_established() when it succeeds (close the session when it fails).
//               Bytes the client pipelined behind STARTTLS were discarded (CVE-2011-0411).
//   Handoff     the client passed (or failed under `ignore`) and sent its first valid
//               RCPT TO, which is NOT answered: replay tx.replay_lines() to the
//               backend after its greeting and the handoff header, compare each reply
//               class with what the client saw (250 for HELO/EHLO and MAIL), relay the
//               backend's answer to the RCPT (or its refusal of an earlier replayed
//               command), then send take_unprocessed() to the backend and splice.
//               Cache a pass only when passed() is true.
//   Close       write the replies before it, then close; text is the DISCONNECT
//               outcome ("quit", "rejected", "dropped", "timeout").
// After Handoff or Close the engine is finished and feed() returns nothing.
#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "screen/command_reader.h"
#include "screen/enforce_dialog.h"
#include "screen/smtp_transaction.h"
#include "screen/test_results.h"

namespace smtpscreen {

struct DeepOptions {
    bool pipelining = false;    // deep.pipelining
    bool non_smtp = false;      // deep.non_smtp_command
    bool bare_newline = false;  // deep.bare_newline
    Action action = Action::Enforce;  // deep.action, for whichever test fails
    std::vector<std::string> forbidden{"CONNECT", "GET", "POST", "USER", "PASS"};  // deep.forbidden_commands
    int command_count_limit = 20;  // limits.command_count_limit; 0 or less: no limit
    std::string hostname;          // our name, in the EHLO/HELO and 421 replies
    std::string client;            // "[ip]:port", in log lines
    bool tls_available = false;    // tls.cert and tls.key are set: offer STARTTLS
};

DeepOptions deep_options(const Config& config, std::string hostname, std::string client, bool tls_available);

struct DeepEvent {
    enum class Kind { Reply, Violation, Log, LineStarted, StartTls, Handoff, Close };
    Kind kind;
    std::string text;         // Reply: CRLF-terminated lines; Violation, Log: one log line
                              // without newline; Close: the DISCONNECT outcome
    Test test = Test::Count;  // Violation: the test that failed
    SmtpTransaction tx;       // Handoff: what to replay
};

class DeepDialog {
public:
    explicit DeepDialog(DeepOptions options);
    // The enforce responder's log callback points back at this object.
    DeepDialog(const DeepDialog&) = delete;
    DeepDialog& operator=(const DeepDialog&) = delete;
    ~DeepDialog();

    // The bytes of one read from the client. Every complete line in them is handled
    // before this returns, which is what the pipelining test relies on: a line that
    // arrives in the same read behind another one was sent before our reply to it.
    std::vector<DeepEvent> feed(std::string_view bytes);

    // The TLS handshake that StartTls asked for succeeded. RFC 3207 §4.2: the client
    // starts over, so the HELO/EHLO and any MAIL FROM from before it are forgotten.
    void tls_established();

    // limits.command_time_limit ran out: Log "COMMAND TIME LIMIT from [ip]:port",
    // Reply "421 4.4.2 host Error: timeout exceeded", Close "timeout".
    std::vector<DeepEvent> time_limit_exceeded();

    // A command line has started and not ended (for the command time limit).
    bool has_partial_line() const;
    // After Handoff: what the client sent behind its RCPT TO, raw, for the backend.
    std::string take_unprocessed();

    bool failed(Test test) const { return failed_[static_cast<size_t>(test)]; }
    // No enabled deep test failed: the session may cache the deep-test passes.
    bool passed() const;
    bool enforcing() const { return enforce_ != nullptr; }
    bool finished() const { return state_ == State::HandedOff || state_ == State::Closed; }
    int command_count() const { return commands_; }

private:
    enum class State { Command, AwaitingTls, HandedOff, Closed };
    struct CommandRow;
    static const CommandRow kCommands[];

    void handle_line(const CommandLine& line, std::string_view unread);
    bool fail(Test test, std::string log);  // false: the session is over (drop)
    void start_enforce();
    void execute(const CommandLine& line, const SmtpCommand& cmd);

    void reply(std::string_view text);
    void close(std::string outcome);
    void emit(DeepEvent::Kind kind, std::string text, Test test = Test::Count);

    // The command table's check and proceed steps. A check returns the error reply
    // (without CRLF), or an empty string when the command may go ahead; `line` is the
    // command line as sent, which MAIL and RCPT keep verbatim for the replay.
    std::string check_helo(const SmtpCommand& cmd) const;
    std::string check_starttls(const SmtpCommand& cmd) const;
    std::string check_mail(const SmtpCommand& cmd) const;
    std::string check_rcpt(const SmtpCommand& cmd) const;
    std::string check_data(const SmtpCommand& cmd) const;
    std::string check_rset(const SmtpCommand& cmd) const;
    std::string check_vrfy(const SmtpCommand& cmd) const;
    void proceed_helo(const SmtpCommand& cmd, std::string_view line);
    void proceed_ehlo(const SmtpCommand& cmd, std::string_view line);
    void proceed_starttls(const SmtpCommand& cmd, std::string_view line);
    void proceed_mail(const SmtpCommand& cmd, std::string_view line);
    void proceed_rcpt(const SmtpCommand& cmd, std::string_view line);
    void proceed_rset(const SmtpCommand& cmd, std::string_view line);
    void proceed_noop(const SmtpCommand& cmd, std::string_view line);
    void proceed_quit(const SmtpCommand& cmd, std::string_view line);
    void proceed_help(const SmtpCommand& cmd, std::string_view line);
    void record_helo(const SmtpCommand& cmd);

    DeepOptions options_;
    State state_ = State::Command;
    CommandReader reader_;
    std::string input_;    // raw client bytes not yet split into lines (bounded, see feed)
    size_t consumed_ = 0;  // of input_, during feed()
    std::vector<DeepEvent> out_;
    std::array<bool, kTestCount> failed_{};
    std::unique_ptr<EnforceDialog> enforce_;

    bool tls_active_ = false;
    std::string helo_verb_;
    std::string helo_name_;
    bool have_mail_ = false;
    std::string mail_line_;
    std::string mail_from_;
    std::string last_verb_ = "CONNECT";  // postscreen's "after CMD" before the first command
    int commands_ = 0;
};

}  // namespace smtpscreen
