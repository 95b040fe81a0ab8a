#include "screen/smtp_dialog.h"

#include <utility>

#include "screen/deep_tests.h"
#include "screen/replies.h"

namespace smtpscreen {
namespace {

// RFC 5321 §4.5.3.1.4: 512 octets with the CRLF; a longer line gets replies::kLineTooLong.
constexpr size_t kMaxCommandLine = 512;

bool has_argument(std::string_view args) { return args.find_first_not_of(' ') != std::string_view::npos; }

std::string first_word(std::string_view args) {
    const size_t start = args.find_first_not_of(' ');
    if (start == std::string_view::npos) return {};
    return std::string(args.substr(start, args.find(' ', start) - start));
}

// postscreen (psc_extract_addr) strips the deprecated source route "@a,@b:user@dom"
// before logging, to keep log analysis simple; we do the same.
std::string_view without_source_route(std::string_view addr) {
    if (!addr.empty() && addr.front() == '@') {
        const size_t colon = addr.find(':');
        if (colon != std::string_view::npos) return addr.substr(colon + 1);
    }
    return addr;
}

// Client-supplied text goes into the log as Postfix's printable() leaves it: control
// characters and non-ASCII become '?', so a client cannot forge or split log lines.
std::string printable(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    }
    return out;
}

// What a load balancer's SMTP check sends (HAProxy's smtpchk: EHLO or HELO, then QUIT;
// others NOOP or RSET). Anything else is not for a health check to ask.
bool health_check_verb(std::string_view verb) {
    return verb == "EHLO" || verb == "HELO" || verb == "NOOP" || verb == "RSET" || verb == "QUIT";
}

DialogOptions common_options(const Config& config, std::string client, bool tls_available) {
    DialogOptions options;
    options.command_count_limit = config.command_count_limit;
    options.hostname = config.hostname;
    options.client = std::move(client);
    options.tls_available = tls_available;
    return options;
}

}  // namespace

DialogOptions deep_options(const Config& config, std::vector<std::string> ehlo_keywords, std::string client,
                           bool tls_available) {
    DialogOptions options = common_options(config, std::move(client), tls_available);
    options.ehlo_keywords = std::move(ehlo_keywords);
    options.mode = DialogMode::Deep;
    options.pipelining = config.deep_pipelining;
    options.non_smtp = config.deep_non_smtp_command;
    options.bare_newline = config.deep_bare_newline;
    options.action = config.deep_action;
    options.forbidden = config.deep_forbidden_commands;
    return options;
}

DialogOptions enforce_options(const Config& config, std::string client, bool tls_available,
                              std::string reject_reply) {
    DialogOptions options = common_options(config, std::move(client), tls_available);
    options.mode = DialogMode::Enforce;
    options.reject_reply = std::move(reject_reply);
    options.forbidden = {};  // the deep tests' alone: an enforced client does not keep a copy
    return options;
}

DialogOptions tls_first_options(const Config& config, std::vector<std::string> ehlo_keywords, std::string client) {
    DialogOptions options = common_options(config, std::move(client), true);
    options.ehlo_keywords = std::move(ehlo_keywords);
    options.mode = DialogMode::TlsFirst;
    options.forbidden = {};
    return options;
}

DialogOptions health_check_options(const Config& config) {
    DialogOptions options = common_options(config, "load balancer", false);
    options.mode = DialogMode::HealthCheck;
    options.forbidden = {};
    return options;
}

// ---------------------------------------------------------------- the command table

struct SmtpDialog::CommandRow {
    std::string_view verb;
    Needs needs;                 // checked first; out of phase gets `out_of_phase`
    std::string_view out_of_phase;
    std::string (SmtpDialog::*check)(const SmtpCommand&) const;  // null: always allowed
    void (SmtpDialog::*proceed)(const SmtpCommand&, std::string_view);
    std::string_view refusal;  // set: the command is never carried out here
};

// postscreen's command_table[] (postscreen_smtpd.c): the same verbs, checks and
// replies, in every mode. A verb not in it is "502 5.5.2 Error: command not
// recognized", as in postscreen and smtpd(8) (HELP included).
const SmtpDialog::CommandRow SmtpDialog::kCommands[] = {
    {"HELO", Needs::Nothing, {}, &SmtpDialog::check_helo, &SmtpDialog::proceed_helo, {}},
    {"EHLO", Needs::Nothing, {}, &SmtpDialog::check_helo, &SmtpDialog::proceed_ehlo, {}},
    {"STARTTLS", Needs::Nothing, {}, &SmtpDialog::check_starttls, &SmtpDialog::proceed_starttls, {}},
    {"MAIL", Needs::Helo, replies::kSendHeloFirst, &SmtpDialog::check_mail, &SmtpDialog::proceed_mail, {}},
    {"RCPT", Needs::Mail, replies::kNeedMail, &SmtpDialog::check_rcpt, &SmtpDialog::proceed_rcpt, {}},
    // DATA never goes ahead: no RCPT is ever accepted here (the first one that passes
    // its check in Deep mode hands off). Its syntax is checked before its phase.
    {"DATA", Needs::Nothing, {}, &SmtpDialog::check_data, nullptr, {}},
    // postscreen ignores RSET's arguments; so do we.
    {"RSET", Needs::Nothing, {}, nullptr, &SmtpDialog::proceed_rset, {}},
    {"NOOP", Needs::Nothing, {}, nullptr, &SmtpDialog::proceed_noop, {}},
    {"QUIT", Needs::Nothing, {}, nullptr, &SmtpDialog::proceed_quit, {}},
    {"VRFY", Needs::Nothing, {}, &SmtpDialog::check_vrfy, nullptr, {}},
    {"EXPN", Needs::Nothing, {}, nullptr, nullptr, replies::kExpnDisabled},
    // Offered, and refused with a temporary error as postscreen does: only the
    // backend's queue could run it.
    {"ETRN", Needs::Helo, replies::kSendHeloFirst, &SmtpDialog::check_etrn, nullptr, {}},
    // Not offered in our EHLO reply and never passed on (docs/design.md, "Hostile input"):
    // XCLIENT/XFORWARD would let a client forge its address at the backend; AUTH
    // belongs to the submission port; BDAT needs CHUNKING (RFC 3030).
    {"AUTH", Needs::Nothing, {}, nullptr, nullptr, replies::kNotImplemented},
    {"XCLIENT", Needs::Nothing, {}, nullptr, nullptr, replies::kNotImplemented},
    {"XFORWARD", Needs::Nothing, {}, nullptr, nullptr, replies::kNotImplemented},
    {"BDAT", Needs::Nothing, {}, nullptr, nullptr, replies::kNotImplemented},
};

// ---------------------------------------------------------------- reading

SmtpDialog::SmtpDialog(DialogOptions options) : options_(std::move(options)), reader_(kMaxCommandLine) {}

std::vector<DialogEvent> SmtpDialog::feed(std::string_view bytes, size_t reply_room) {
    out_.clear();
    unhandled_lines_ = false;
    replied_ = 0;
    if (state_ == State::HandedOff) {
        // The session stops reading at Handoff; anything it still passes belongs to the backend.
        input_.append(bytes);
        return {};
    }
    // AwaitingTls: bytes between our 220 to STARTTLS and the handshake are dropped
    // (CVE-2011-0411); Closed: nothing more is read.
    if (state_ != State::Command) return {};

    const bool line_was_open = has_partial_line();
    bool line_ended = false;
    input_.append(bytes);
    while (state_ == State::Command) {
        const std::string_view rest = std::string_view(input_).substr(consumed_);
        const size_t lf = rest.find('\n');
        if (lf == std::string_view::npos) break;
        // The replies so far fill the room the session has for them: the lines left
        // wait, raw (so the pipelining test still sees what was sent behind each), until
        // the client has read enough to make room (docs/design.md, "Bounded output").
        if (replied_ >= reply_room) {
            unhandled_lines_ = true;
            break;
        }
        // One line at a time through the reader, so that what follows the line is
        // still here, raw, for the pipelining test and for the handoff.
        reader_.feed(rest.substr(0, lf + 1));
        line_start_ = consumed_;
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
        if (!unhandled_lines_ && input_.size() > kMaxCommandLine) {
            reader_.feed(input_);
            input_.clear();
        }
        if (!unhandled_lines_ && has_partial_line() && (!line_was_open || line_ended)) emit(DialogEvent::Kind::LineStarted, {});
    }
    return std::move(out_);
}

bool SmtpDialog::has_partial_line() const { return consumed_ < input_.size() || reader_.has_partial(); }

std::string SmtpDialog::take_unprocessed() { return std::exchange(input_, {}); }

bool SmtpDialog::passed() const {
    return !(options_.pipelining && failed(Test::Pipelining)) && !(options_.non_smtp && failed(Test::NonSmtp)) &&
           !(options_.bare_newline && failed(Test::BareNewline));
}

void SmtpDialog::tls_established() {
    if (state_ != State::AwaitingTls) return;
    state_ = State::Command;
    tls_active_ = true;
    // RFC 3207 §4.2: discard all knowledge obtained from the client before TLS.
    helo_verb_.clear();
    helo_name_.clear();
    proto_ = "SMTP";
    forget_transaction();
    input_.clear();
    reader_ = CommandReader(kMaxCommandLine);
}

std::vector<DialogEvent> SmtpDialog::time_limit_exceeded() {
    out_.clear();
    if (finished()) return {};
    // postscreen's log line and reply for postscreen_command_time_limit.
    emit(DialogEvent::Kind::Log, "COMMAND TIME LIMIT from " + options_.client);
    reply(replies::timeout_exceeded(options_.hostname));
    close("timeout");
    return std::move(out_);
}

// ---------------------------------------------------------------- one command line

// The order is postscreen's: the tests first (bare newline, non-SMTP, pipelining),
// then the command count, then the command itself. A test that failed once is not run
// again in this session, so each failure is logged once.
void SmtpDialog::handle_line(const CommandLine& line, std::string_view unread) {
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

    // postscreen_command_count_limit, in every mode: it is what ends a client that
    // streams commands at us without reading a reply. QUIT always ends the session.
    ++commands_;
    if (options_.command_count_limit > 0 && commands_ > options_.command_count_limit && cmd.verb != "QUIT") {
        emit(DialogEvent::Kind::Log, "COMMAND COUNT LIMIT from " + client);
        reply(replies::too_many_commands(options_.hostname));
        return close("rejected");
    }
    execute(line, cmd);
}

bool SmtpDialog::fail(Test test, std::string log) {
    failed_[static_cast<size_t>(test)] = true;
    emit(DialogEvent::Kind::Violation, std::move(log), test);
    switch (options_.action) {
    case Action::Ignore: return true;
    case Action::Enforce:
    case Action::Tarpit:
        // From here on the client talks to the enforce action's dialog, as any client
        // that failed a test does; it keeps what the client already said, so that the
        // NOQUEUE line names its helo and sender.
        if (options_.mode != DialogMode::Enforce) {
            options_.mode = DialogMode::Enforce;
            options_.reject_reply = std::string(replies::kProtocolError);
        }
        // The tarpit offers no STARTTLS: a handshake would cost it a TLS context and
        // the CPU of one (docs/design.md, "Edge defences").
        if (options_.action == Action::Tarpit) options_.tls_available = false;
        return true;
    case Action::Drop:
        reply(replies::kDropProtocol);
        close("dropped");
        return false;
    }
    return true;
}

void SmtpDialog::execute(const CommandLine& line, const SmtpCommand& cmd) {
    if (line.too_long) return reply(replies::kLineTooLong);
    if (options_.mode == DialogMode::HealthCheck && !health_check_verb(cmd.verb)) {
        return reply(replies::kNotImplemented);
    }
    if (options_.mode == DialogMode::TlsFirst && needs_backend(cmd)) return hand_off_command();
    for (const CommandRow& row : kCommands) {
        if (row.verb != cmd.verb) continue;
        if (!row.refusal.empty()) return reply(row.refusal);
        if (!in_phase(row.needs)) return reply(row.out_of_phase);
        if (row.check) {
            if (std::string error = (this->*row.check)(cmd); !error.empty()) return reply(error);
        }
        return (this->*row.proceed)(cmd, line.text);
    }
    reply(replies::kNotRecognized);
}

bool SmtpDialog::in_phase(Needs needs) const {
    switch (needs) {
    case Needs::Nothing: return true;
    case Needs::Helo: return !helo_verb_.empty();
    case Needs::Mail: return have_mail_;
    }
    return true;
}

void SmtpDialog::emit(DialogEvent::Kind kind, std::string text, Test test) {
    if (kind == DialogEvent::Kind::Reply) replied_ += text.size();
    out_.push_back(DialogEvent{kind, std::move(text), test, {}});
}

void SmtpDialog::reply(std::string_view text) { emit(DialogEvent::Kind::Reply, replies::crlf(text)); }

void SmtpDialog::close(std::string outcome) {
    state_ = State::Closed;
    emit(DialogEvent::Kind::Close, std::move(outcome));
}

// ---------------------------------------------------------------- checks

std::string SmtpDialog::check_helo(const SmtpCommand& cmd) const {
    if (!has_argument(cmd.args)) return replies::helo_syntax(cmd.verb);
    return {};
}

// postscreen's order: syntax, then TLS already on, then TLS not available; then a
// transaction in progress (RFC 3207 §4.2: TLS would silently drop it, and the relay
// refuses it the same way, see proxy/command_pairing.h).
std::string SmtpDialog::check_starttls(const SmtpCommand& cmd) const {
    if (has_argument(cmd.args)) return std::string(replies::kStarttlsSyntax);
    if (tls_active_) return std::string(replies::kTlsAlreadyActive);
    if (!options_.tls_available) return std::string(replies::kNotImplemented);
    if (have_mail_) return std::string(replies::kMailInProgress);
    return {};
}

std::string SmtpDialog::check_mail(const SmtpCommand& cmd) const {
    if (have_mail_) return std::string(replies::kNestedMail);
    if (cmd.args.find(':') == std::string::npos) return std::string(replies::kMailSyntax);
    if (!mail_address(cmd.args, "FROM")) return std::string(replies::kBadSender);
    return {};
}

std::string SmtpDialog::check_rcpt(const SmtpCommand& cmd) const {
    if (cmd.args.find(':') == std::string::npos) return std::string(replies::kRcptSyntax);
    if (!mail_address(cmd.args, "TO")) return std::string(replies::kBadRecipient);
    return {};
}

std::string SmtpDialog::check_data(const SmtpCommand& cmd) const {
    if (has_argument(cmd.args)) return std::string(replies::kDataSyntax);
    if (!have_mail_) return std::string(replies::kNeedRcpt);
    return std::string(replies::kNoValidRecipients);
}

std::string SmtpDialog::check_vrfy(const SmtpCommand& cmd) const {
    if (!has_argument(cmd.args)) return std::string(replies::kVrfySyntax);
    return std::string(replies::kVrfyDisabled);
}

std::string SmtpDialog::check_etrn(const SmtpCommand& cmd) const {
    if (!has_argument(cmd.args)) return std::string(replies::kEtrnSyntax);
    return std::string(replies::kEtrnRefused);
}

// ---------------------------------------------------------------- proceed

void SmtpDialog::forget_transaction() {
    have_mail_ = false;
    mail_line_.clear();
    mail_from_.clear();
}

void SmtpDialog::record_helo(const SmtpCommand& cmd) {
    helo_verb_ = cmd.verb;
    // postscreen keeps the first word only (smtpd keeps them all); so does the replay.
    helo_name_ = first_word(cmd.args);
    // RFC 5321 §4.1.4: HELO/EHLO in the middle of a transaction resets it.
    forget_transaction();
}

void SmtpDialog::proceed_helo(const SmtpCommand& cmd, std::string_view) {
    record_helo(cmd);
    // Like postscreen, HELO after EHLO does not downgrade proto= to SMTP.
    reply(replies::helo(options_.hostname));
}

void SmtpDialog::proceed_ehlo(const SmtpCommand& cmd, std::string_view) {
    record_helo(cmd);
    proto_ = "ESMTP";
    // A health check is offered nothing it could go on to use.
    if (options_.mode == DialogMode::HealthCheck) return reply(replies::helo(options_.hostname));
    emit(DialogEvent::Kind::Reply,
         replies::ehlo(options_.hostname, options_.ehlo_keywords, options_.tls_available && !tls_active_));
}

void SmtpDialog::proceed_starttls(const SmtpCommand&, std::string_view) {
    if (options_.take_tls_slot && !options_.take_tls_slot()) return reply(replies::kTlsTemporarilyUnavailable);
    reply(replies::kReadyToStartTls);
    state_ = State::AwaitingTls;
    emit(DialogEvent::Kind::StartTls, {});
}

void SmtpDialog::proceed_mail(const SmtpCommand& cmd, std::string_view line) {
    have_mail_ = true;
    mail_line_ = std::string(line);
    mail_from_ = mail_address(cmd.args, "FROM").value_or(std::string());
    reply(replies::kSenderOk);
}

void SmtpDialog::proceed_rcpt(const SmtpCommand& cmd, std::string_view line) {
    switch (options_.mode) {
    case DialogMode::Enforce: return reject_rcpt(cmd);
    case DialogMode::Deep: return hand_off(cmd, line);
    case DialogMode::TlsFirst:  // handed off in execute()
    case DialogMode::HealthCheck: return reply(replies::kNotImplemented);  // refused in execute()
    }
}

// postscreen's NOQUEUE line, which fail2ban's stock postfix filter matches.
void SmtpDialog::reject_rcpt(const SmtpCommand& cmd) {
    const std::string rcpt = mail_address(cmd.args, "TO").value_or(std::string());
    emit(DialogEvent::Kind::Log, "NOQUEUE: reject: RCPT from " + options_.client + ": " + options_.reject_reply +
                                     "; from=<" + printable(without_source_route(mail_from_)) + ">, to=<" +
                                     printable(without_source_route(rcpt)) + ">, proto=" + proto_ + ", helo=<" +
                                     printable(helo_name_) + ">");
    reply(options_.reject_reply);
}

// The pass (README, deep tests): no reply from us; the backend answers this RCPT.
void SmtpDialog::hand_off(const SmtpCommand& cmd, std::string_view line) {
    DialogEvent handoff{DialogEvent::Kind::Handoff, {}, Test::Count, {}};
    handoff.tx.helo_verb = helo_verb_;
    handoff.tx.helo_name = helo_name_;
    handoff.tx.mail_line = mail_line_;
    handoff.tx.mail_from = mail_from_;
    handoff.tx.rcpt_line = std::string(line);
    handoff.tx.rcpt_to = mail_address(cmd.args, "TO").value_or(std::string());
    handoff.tx.tls = tls_active_;
    handoff_rcpt_ = handoff.tx.rcpt_to;
    out_.push_back(std::move(handoff));
    state_ = State::HandedOff;
}

// TLS before the backend (docs/design.md, "TLS"): what comes before the handshake is
// ours to answer; RFC 3207 §4.2 makes the client start over after it, so its first
// command in TLS (QUIT aside: nothing needs the backend then) is the backend's, and so
// is any command in clear past the greeting, EHLO and STARTTLS.
bool SmtpDialog::needs_backend(const SmtpCommand& cmd) const {
    if (tls_active_) return cmd.verb != "QUIT";
    return !(cmd.verb == "EHLO" || cmd.verb == "HELO" || cmd.verb == "STARTTLS" || cmd.verb == "NOOP" ||
             cmd.verb == "RSET" || cmd.verb == "QUIT");
}

// The command is not answered: it stays unprocessed, raw and first, ahead of whatever
// the client pipelined behind it, for the backend to answer.
void SmtpDialog::hand_off_command() {
    DialogEvent handoff{DialogEvent::Kind::Handoff, {}, Test::Count, {}};
    handoff.tx.helo_verb = helo_verb_;
    handoff.tx.helo_name = helo_name_;
    handoff.tx.tls = tls_active_;
    consumed_ = line_start_;
    out_.push_back(std::move(handoff));
    state_ = State::HandedOff;
}

std::vector<DialogEvent> SmtpDialog::refuse_handoff(std::string_view reply_text) {
    out_.clear();
    replied_ = 0;
    if (state_ != State::HandedOff) return {};
    state_ = State::Command;
    // The addresses as the NOQUEUE line shows them: printable, without a source route.
    emit(DialogEvent::Kind::Log, "GREYLISTED " + options_.client + ": from=<" +
                                     printable(without_source_route(mail_from_)) + ">, to=<" +
                                     printable(without_source_route(handoff_rcpt_)) + ">");
    reply(reply_text);
    return std::move(out_);
}

void SmtpDialog::proceed_rset(const SmtpCommand&, std::string_view) {
    forget_transaction();
    reply(replies::kOk);
}

void SmtpDialog::proceed_noop(const SmtpCommand&, std::string_view) { reply(replies::kOk); }

void SmtpDialog::proceed_quit(const SmtpCommand&, std::string_view) {
    reply(replies::bye(options_.hostname));
    // A client we enforced on is logged as rejected, however politely it leaves.
    close(options_.mode == DialogMode::Enforce ? "rejected" : "quit");
}

}  // namespace smtpscreen
