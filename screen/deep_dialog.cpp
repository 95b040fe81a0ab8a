#include "screen/deep_dialog.h"

#include <utility>

#include "screen/deep_tests.h"

namespace smtpscreen {
namespace {

// RFC 5321 §4.5.3.1.4: 512 octets with the CRLF. SPEC §4: longer gets "500 5.5.2".
constexpr size_t kMaxCommandLine = 512;

// The reply of every deep test failure under `enforce` (SPEC §2 step 7).
constexpr std::string_view kProtocolError = "550 5.5.1 Protocol error";

std::string crlf(std::string_view reply) {
    std::string out(reply);
    out += "\r\n";
    return out;
}

bool has_argument(std::string_view args) { return args.find_first_not_of(' ') != std::string_view::npos; }

std::string first_word(std::string_view args) {
    const size_t start = args.find_first_not_of(' ');
    if (start == std::string_view::npos) return {};
    return std::string(args.substr(start, args.find(' ', start) - start));
}

}  // namespace

DeepOptions deep_options(const Config& config, std::string hostname, std::string client, bool tls_available) {
    DeepOptions options;
    options.pipelining = config.deep_pipelining;
    options.non_smtp = config.deep_non_smtp_command;
    options.bare_newline = config.deep_bare_newline;
    options.action = config.deep_action;
    options.forbidden = config.deep_forbidden_commands;
    options.command_count_limit = config.command_count_limit;
    options.hostname = std::move(hostname);
    options.client = std::move(client);
    options.tls_available = tls_available;
    return options;
}

// ---------------------------------------------------------------- the command table

struct DeepDialog::CommandRow {
    std::string_view verb;
    std::string (DeepDialog::*check)(const SmtpCommand&) const;  // null: always allowed
    void (DeepDialog::*proceed)(const SmtpCommand&, std::string_view);
    std::string_view refusal;  // set: the command is never carried out before handoff
};

// Replies follow postscreen_smtpd.c (and smtpd(8) where postscreen has none) word for
// word unless a comment says otherwise, so a client sees the same server before and
// after the handoff to a Postfix backend.
const DeepDialog::CommandRow DeepDialog::kCommands[] = {
    {"HELO", &DeepDialog::check_helo, &DeepDialog::proceed_helo, {}},
    {"EHLO", &DeepDialog::check_helo, &DeepDialog::proceed_ehlo, {}},
    {"STARTTLS", &DeepDialog::check_starttls, &DeepDialog::proceed_starttls, {}},
    {"MAIL", &DeepDialog::check_mail, &DeepDialog::proceed_mail, {}},
    {"RCPT", &DeepDialog::check_rcpt, &DeepDialog::proceed_rcpt, {}},
    // DATA never goes ahead here: the first RCPT that passes its check hands off.
    {"DATA", &DeepDialog::check_data, nullptr, {}},
    {"RSET", &DeepDialog::check_rset, &DeepDialog::proceed_rset, {}},
    {"NOOP", nullptr, &DeepDialog::proceed_noop, {}},
    {"QUIT", nullptr, &DeepDialog::proceed_quit, {}},
    {"HELP", nullptr, &DeepDialog::proceed_help, {}},
    // SPEC §4: VRFY and EXPN get 502 5.5.1 (postscreen_disable_vrfy_command = yes).
    {"VRFY", &DeepDialog::check_vrfy, nullptr, {}},
    {"EXPN", nullptr, nullptr, "502 5.5.1 EXPN command is disabled"},
    // Not offered in our EHLO reply and never passed on (SPEC §4): XCLIENT/XFORWARD
    // would let a client forge its address at the backend; AUTH is smtpd(8)'s answer
    // with SASL off; BDAT needs CHUNKING (RFC 3030), which we do not offer; ETRN would
    // need the backend's queue.
    {"AUTH", nullptr, nullptr, "503 5.5.1 Error: authentication not enabled"},
    {"XCLIENT", nullptr, nullptr, "502 5.5.1 Error: command not implemented"},
    {"XFORWARD", nullptr, nullptr, "502 5.5.1 Error: command not implemented"},
    {"BDAT", nullptr, nullptr, "502 5.5.1 Error: command not implemented"},
    {"ETRN", nullptr, nullptr, "502 5.5.1 Error: command not implemented"},
};

// ---------------------------------------------------------------- reading

DeepDialog::DeepDialog(DeepOptions options) : options_(std::move(options)), reader_(kMaxCommandLine) {}

DeepDialog::~DeepDialog() = default;

std::vector<DeepEvent> DeepDialog::feed(std::string_view bytes) {
    out_.clear();
    if (state_ == State::HandedOff) {
        // The session stops reading at Handoff; anything it still passes belongs to the backend.
        input_.append(bytes);
        return {};
    }
    // AwaitingTls: bytes between our 220 to STARTTLS and the handshake are dropped
    // (SPEC §3, CVE-2011-0411); Closed: nothing more is read.
    if (state_ != State::Command) return {};

    const bool line_was_open = has_partial_line();
    bool line_ended = false;
    input_.append(bytes);
    while (state_ == State::Command) {
        const std::string_view rest = std::string_view(input_).substr(consumed_);
        const size_t lf = rest.find('\n');
        if (lf == std::string_view::npos) break;
        // One line at a time through the reader, so that what follows the line is
        // still here, raw, for the pipelining test and for the handoff.
        reader_.feed(rest.substr(0, lf + 1));
        consumed_ += lf + 1;
        line_ended = true;
        if (auto line = reader_.next()) handle_line(*line, std::string_view(input_).substr(consumed_));
    }
    input_.erase(0, consumed_);
    consumed_ = 0;

    if (state_ == State::AwaitingTls) {
        input_.clear();
        reader_ = CommandReader(kMaxCommandLine);
    } else if (state_ == State::Command) {
        // A line without its LF is held by the reader, which keeps at most 512 octets
        // of it and marks it too long: a client cannot make us hold more.
        if (input_.size() > kMaxCommandLine) {
            reader_.feed(input_);
            input_.clear();
        }
        if (has_partial_line() && (!line_was_open || line_ended)) emit(DeepEvent::Kind::LineStarted, {});
    }
    return std::move(out_);
}

bool DeepDialog::has_partial_line() const { return consumed_ < input_.size() || reader_.has_partial(); }

std::string DeepDialog::take_unprocessed() { return std::exchange(input_, {}); }

bool DeepDialog::passed() const {
    return !(options_.pipelining && failed(Test::Pipelining)) && !(options_.non_smtp && failed(Test::NonSmtp)) &&
           !(options_.bare_newline && failed(Test::BareNewline));
}

void DeepDialog::tls_established() {
    if (state_ != State::AwaitingTls) return;
    state_ = State::Command;
    tls_active_ = true;
    // RFC 3207 §4.2: discard all knowledge obtained from the client before TLS.
    helo_verb_.clear();
    helo_name_.clear();
    have_mail_ = false;
    mail_line_.clear();
    mail_from_.clear();
    input_.clear();
    reader_ = CommandReader(kMaxCommandLine);
}

std::vector<DeepEvent> DeepDialog::time_limit_exceeded() {
    out_.clear();
    if (finished()) return {};
    // postscreen's log line and reply for postscreen_command_time_limit.
    emit(DeepEvent::Kind::Log, "COMMAND TIME LIMIT from " + options_.client);
    reply("421 4.4.2 " + options_.hostname + " Error: timeout exceeded");
    close("timeout");
    return std::move(out_);
}

// ---------------------------------------------------------------- one command line

// The order is postscreen's: the tests first (bare newline, non-SMTP, pipelining),
// then the command count, then the command itself. A test that failed once is not run
// again in this session, so each failure is logged once.
void DeepDialog::handle_line(const CommandLine& line, std::string_view unread) {
    const SmtpCommand cmd = parse_command(line.text);
    const std::string& client = options_.client;

    if (options_.bare_newline && !failed(Test::BareNewline)) {
        if (auto log = check_bare_newline(client, last_verb_, line); log && !fail(Test::BareNewline, *log)) return;
    }
    if (options_.non_smtp && !failed(Test::NonSmtp)) {
        if (auto log = check_non_smtp(client, last_verb_, line.text, options_.forbidden);
            log && !fail(Test::NonSmtp, *log)) {
            return;
        }
    }
    if (options_.pipelining && !failed(Test::Pipelining)) {
        // Bytes behind a RCPT that would hand off are pipelining too: we never offered
        // PIPELINING, so the client owed us a wait for the RCPT reply.
        if (auto log = check_pipelining(client, cmd.verb, unread); log && !fail(Test::Pipelining, *log)) return;
    }
    last_verb_ = cmd.verb;

    // postscreen_command_count_limit; QUIT is always allowed to end the session.
    ++commands_;
    if (options_.command_count_limit > 0 && commands_ > options_.command_count_limit && cmd.verb != "QUIT") {
        emit(DeepEvent::Kind::Log, "COMMAND COUNT LIMIT from " + client);
        reply("421 4.7.0 " + options_.hostname + " Error: too many commands");
        return close("rejected");
    }
    execute(line, cmd);
}

bool DeepDialog::fail(Test test, std::string log) {
    failed_[static_cast<size_t>(test)] = true;
    emit(DeepEvent::Kind::Violation, std::move(log), test);
    switch (options_.action) {
    case Action::Ignore: return true;
    case Action::Enforce:
        if (!enforce_) start_enforce();
        return true;
    case Action::Drop:
        reply("521 5.5.1 Protocol error");
        close("dropped");
        return false;
    }
    return true;
}

// From here on the client talks to the enforce action's responder, as any client that
// failed a test does (SPEC §2 step 7). It learns what the client already said by
// hearing it again, so that a RCPT after MAIL is rejected with the protocol error (not
// "need MAIL command") and the NOQUEUE line names the client's helo and sender.
void DeepDialog::start_enforce() {
    enforce_ = std::make_unique<EnforceDialog>(options_.hostname, options_.client, std::string(kProtocolError),
                                               [this](const std::string& line) { emit(DeepEvent::Kind::Log, line); });
    if (!helo_verb_.empty()) enforce_->on_line(CommandLine{helo_verb_ + " " + helo_name_, false, false});
    if (have_mail_) enforce_->on_line(CommandLine{mail_line_, false, false});
}

void DeepDialog::execute(const CommandLine& line, const SmtpCommand& cmd) {
    if (enforce_) {
        EnforceDialog::Reply answer = enforce_->on_line(line);
        if (!answer.text.empty()) emit(DeepEvent::Kind::Reply, std::move(answer.text));
        if (answer.close) close("rejected");
        return;
    }
    if (line.too_long) return reply("500 5.5.2 Line too long");
    if (line.text.empty()) return reply("500 5.5.2 Error: bad syntax");  // smtpd(8)'s words
    for (const CommandRow& row : kCommands) {
        if (row.verb != cmd.verb) continue;
        if (!row.refusal.empty()) return reply(row.refusal);
        if (row.check) {
            if (std::string error = (this->*row.check)(cmd); !error.empty()) return reply(error);
        }
        return (this->*row.proceed)(cmd, line.text);
    }
    reply("502 5.5.2 Error: command not recognized");
}

void DeepDialog::emit(DeepEvent::Kind kind, std::string text, Test test) {
    out_.push_back(DeepEvent{kind, std::move(text), test, {}});
}

void DeepDialog::reply(std::string_view text) { emit(DeepEvent::Kind::Reply, crlf(text)); }

void DeepDialog::close(std::string outcome) {
    state_ = State::Closed;
    emit(DeepEvent::Kind::Close, std::move(outcome));
}

// ---------------------------------------------------------------- checks

std::string DeepDialog::check_helo(const SmtpCommand& cmd) const {
    if (!has_argument(cmd.args)) return "501 Syntax: " + cmd.verb + " hostname";
    return {};
}

std::string DeepDialog::check_starttls(const SmtpCommand& cmd) const {
    if (has_argument(cmd.args)) return "501 5.5.4 Syntax: STARTTLS";
    if (tls_active_) return "554 5.5.1 Error: TLS already active";
    if (!options_.tls_available) return "502 5.5.1 Error: command not implemented";
    return {};
}

std::string DeepDialog::check_mail(const SmtpCommand& cmd) const {
    if (helo_verb_.empty()) return "503 5.5.1 Error: send HELO/EHLO first";
    if (have_mail_) return "503 5.5.1 Error: nested MAIL command";
    if (cmd.args.find(':') == std::string::npos) return "501 5.5.4 Syntax: MAIL FROM:<address>";
    if (!mail_address(cmd.args, "FROM")) return "501 5.1.7 Bad sender address syntax";
    return {};
}

std::string DeepDialog::check_rcpt(const SmtpCommand& cmd) const {
    if (!have_mail_) return "503 5.5.1 Error: need MAIL command";
    if (cmd.args.find(':') == std::string::npos) return "501 5.5.4 Syntax: RCPT TO:<address>";
    if (!mail_address(cmd.args, "TO")) return "501 5.1.3 Bad recipient address syntax";
    return {};
}

std::string DeepDialog::check_data(const SmtpCommand& cmd) const {
    if (has_argument(cmd.args)) return "501 5.5.4 Syntax: DATA";
    if (!have_mail_) return "503 5.5.1 Error: need RCPT command";
    // smtpd(8) in a transaction whose recipients all failed; here none passed a check.
    return "554 5.5.1 Error: no valid recipients";
}

std::string DeepDialog::check_rset(const SmtpCommand& cmd) const {
    if (has_argument(cmd.args)) return "501 5.5.4 Syntax: RSET";
    return {};
}

std::string DeepDialog::check_vrfy(const SmtpCommand& cmd) const {
    if (!has_argument(cmd.args)) return "501 5.5.4 Syntax: VRFY address";
    return "502 5.5.1 VRFY command is disabled";
}

// ---------------------------------------------------------------- proceed

void DeepDialog::record_helo(const SmtpCommand& cmd) {
    helo_verb_ = cmd.verb;
    // postscreen keeps the first word only (smtpd keeps them all); so does the replay.
    helo_name_ = first_word(cmd.args);
    // RFC 5321 §4.1.4: HELO/EHLO in the middle of a transaction resets it.
    have_mail_ = false;
    mail_line_.clear();
    mail_from_.clear();
}

void DeepDialog::proceed_helo(const SmtpCommand& cmd, std::string_view) {
    record_helo(cmd);
    reply("250 " + options_.hostname);
}

void DeepDialog::proceed_ehlo(const SmtpCommand& cmd, std::string_view) {
    record_helo(cmd);
    // postscreen's list without VRFY (disabled) and ETRN (never replayed), and never
    // PIPELINING: a client that pipelines anyway shows itself. SMTPUTF8 is offered
    // because the backends we replay to (Postfix >= 3.0, Exim with I18N) offer it; a
    // backend that does not refuses the replayed MAIL and the client gets that refusal.
    std::string text = "250-" + options_.hostname + "\r\n250-SIZE\r\n";
    if (options_.tls_available && !tls_active_) text += "250-STARTTLS\r\n";
    text += "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n";
    emit(DeepEvent::Kind::Reply, std::move(text));
}

void DeepDialog::proceed_starttls(const SmtpCommand&, std::string_view) {
    reply("220 2.0.0 Ready to start TLS");
    state_ = State::AwaitingTls;
    emit(DeepEvent::Kind::StartTls, {});
}

void DeepDialog::proceed_mail(const SmtpCommand& cmd, std::string_view line) {
    have_mail_ = true;
    mail_line_ = std::string(line);
    mail_from_ = mail_address(cmd.args, "FROM").value_or(std::string());
    reply("250 2.1.0 Ok");
}

// The pass (SPEC §2 step 6): no reply from us; the backend answers this RCPT.
void DeepDialog::proceed_rcpt(const SmtpCommand& cmd, std::string_view line) {
    DeepEvent handoff{DeepEvent::Kind::Handoff, {}, Test::Count, {}};
    handoff.tx.helo_verb = helo_verb_;
    handoff.tx.helo_name = helo_name_;
    handoff.tx.mail_line = mail_line_;
    handoff.tx.mail_from = mail_from_;
    handoff.tx.rcpt_line = std::string(line);
    handoff.tx.rcpt_to = mail_address(cmd.args, "TO").value_or(std::string());
    handoff.tx.tls = tls_active_;
    out_.push_back(std::move(handoff));
    state_ = State::HandedOff;
}

void DeepDialog::proceed_rset(const SmtpCommand&, std::string_view) {
    have_mail_ = false;
    mail_line_.clear();
    mail_from_.clear();
    reply("250 2.0.0 Ok");
}

void DeepDialog::proceed_noop(const SmtpCommand&, std::string_view) { reply("250 2.0.0 Ok"); }

void DeepDialog::proceed_quit(const SmtpCommand&, std::string_view) {
    reply("221 2.0.0 Bye");
    close("quit");
}

void DeepDialog::proceed_help(const SmtpCommand&, std::string_view) {
    // RFC 5321 §4.1.1.8 wants HELP answered; no software name in it (SPEC §4).
    reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT");
}

}  // namespace smtpscreen
