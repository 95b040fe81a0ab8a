#include "proxy/command_pairing.h"

#include <algorithm>

#include "proxy/smtp_words.h"

namespace smtpscreen {

namespace {

using smtp_words::first_word;
using smtp_words::iequals;
using smtp_words::is_space;

// Verbs this pairing acts on are at most 8 octets; a line prefix shorter than this
// could hide "XCLIENT " from the verb check.
constexpr size_t kMinLine = 64;

// A blocked command is *rewritten* to a verb no MTA knows rather than dropped: the backend
// answers it (502), so every command the client sent still gets exactly one reply, in
// order. Dropping it would desynchronize a pipelined group (RFC 2920): the client would
// take the reply to its next command for the reply to the blocked one.
constexpr std::string_view kBlockedCommand = "XSMTPSCREEN-BLOCKED\r\n";

// Our own replies with terminate_starttls (the wording is Postfix's smtpd).
constexpr std::string_view kReadyToStartTls = "220 2.0.0 Ready to start TLS\r\n";
constexpr std::string_view kStartTlsSyntax = "501 5.5.4 Syntax: STARTTLS\r\n";
constexpr std::string_view kTlsAlreadyActive = "554 5.5.1 Error: TLS already active\r\n";
constexpr std::string_view kTlsTemporarilyUnavailable = "454 4.7.0 TLS not available due to temporary reason\r\n";
// smtpd's words for a command a transaction forbids (its AUTH; the deep tests' dialog says
// the same, screen/replies.h).
constexpr std::string_view kMailInProgress = "503 5.5.1 Error: MAIL transaction in progress\r\n";
// What the backend gets after the client's handshake (see the top of command_pairing.h).
constexpr std::string_view kResetAfterTls = "RSET\r\n";
// A command line over max_line (the deep tests' wording).
constexpr std::string_view kLineTooLong = "500 5.5.2 Line too long\r\n";

// A reply line is final unless its fourth octet is '-' (RFC 5321 §4.2.1); "250\r\n"
// alone is a complete final line too.
bool is_final_line(std::string_view head) { return head.size() < 4 || head[3] != '-'; }

// RFC 3207: STARTTLS takes no argument; Postfix's tokenizer ignores white space around it.
bool has_argument(std::string_view line, std::string_view verb) {
    std::string_view rest = line.substr(static_cast<size_t>(verb.data() - line.data()) + verb.size());
    return !std::all_of(rest.begin(), rest.end(), is_space);
}

}  // namespace

CommandPairing::CommandPairing(Options options)
    : options_(options), tls_active_(options.tls_already_active), in_transaction_(options.in_transaction) {
    options_.max_line = std::max(options_.max_line, kMinLine);
}

// ---------------------------------------------------------------------------------
// Client side

size_t CommandPairing::command_bytes(std::string_view in, std::string& to_backend, std::string& to_client) {
    size_t used = 0;
    while (used < in.size() && phase_ == Phase::Command) {
        std::string_view rest = in.substr(used);
        size_t lf = rest.find('\n');
        size_t take = lf == std::string_view::npos ? rest.size() : lf + 1;
        bool line_ends = lf != std::string_view::npos;

        if (discarding_) {
            used += take;
            if (line_ends) {
                discarding_ = false;
                command_forwarded(Awaits::LocalTooLong, to_client);
            }
            continue;
        }
        if (take > options_.max_line - line_.size()) {
            // Over max_line: nothing of it goes to the backend, now or later (see the top
            // of command_pairing.h). Its octets are dropped as they come.
            discarding_ = true;
            line_forwarded();
            continue;
        }
        line_.append(rest.substr(0, take));
        used += take;
        if (line_ends) {
            Awaits awaits = forward_command(line_, to_backend);
            line_forwarded();
            command_forwarded(awaits, to_client);
        }
    }
    return used;
}

// The line buffer is done with. A long line's buffer is given back rather than kept for
// the rest of the session: most sessions never see a command line over 512 octets.
void CommandPairing::line_forwarded() {
    if (line_.capacity() > 512)
        std::string().swap(line_);
    else
        line_.clear();
}

CommandPairing::Awaits CommandPairing::forward_command(std::string_view line, std::string& to_backend) {
    Verb verb = classify(line);
    if (verb != Verb::LocalStartTls) ++commands_sent_;
    switch (verb) {
    case Verb::LocalStartTls:
        // Never forwarded: answered here (in order, see command_forwarded). Postfix's
        // order of checks: syntax first, then TLS already active.
        if (has_argument(line, first_word(line))) return Awaits::LocalSyntax;
        return tls_active_ ? Awaits::LocalTlsActive : Awaits::LocalStartTls;
    case Verb::Blocked:
        to_backend.append(kBlockedCommand);
        return Awaits::Other;
    case Verb::Ehlo:
        to_backend.append(line);
        return Awaits::Ehlo;
    case Verb::Helo:
        to_backend.append(line);
        return Awaits::Helo;
    case Verb::Mail:
        to_backend.append(line);
        return Awaits::Mail;
    case Verb::Rset:
        to_backend.append(line);
        return Awaits::Rset;
    case Verb::Data:
        to_backend.append(line);
        return Awaits::Data;
    case Verb::StartTls:
        to_backend.append(line);
        return Awaits::StartTls;
    case Verb::Quit:
        to_backend.append(line);
        return Awaits::Quit;
    case Verb::Other:
        break;
    }
    to_backend.append(line);
    return Awaits::Other;
}

// Called once the whole line (with its end) has been forwarded (or, for the Local*
// entries, taken in to be answered here).
void CommandPairing::command_forwarded(Awaits awaits, std::string& to_client) {
    awaiting_.push_back(awaits);
    switch (awaits) {
    case Awaits::LocalStartTls:
        // Nothing after STARTTLS is a command until we know we refuse it (RFC 3207 §4: it
        // must be the last command of a pipelined group); our reply goes out once the
        // replies owed before it have, which also tell whether a transaction is open.
        phase_ = Phase::TlsWaiting;
        emit_local_replies(to_client);
        return;
    case Awaits::LocalSyntax:
    case Awaits::LocalTlsActive:
    case Awaits::LocalTooLong:
        emit_local_replies(to_client);   // releases nothing: the phase is Command
        // Still queued behind backend replies: hold what follows until it goes out, so the
        // queue of our own replies cannot grow while the backend is silent.
        if (!awaiting_.empty()) phase_ = Phase::Held;
        return;
    default:
        break;
    }
    // RFC 5321 §4.1.1.4: what follows DATA is message content only if the server
    // answers 354; otherwise it is more commands. RFC 3207: what follows STARTTLS is a
    // TLS handshake only if the server answers 220. Only the backend's reply tells, so
    // nothing more of the client goes through until it arrives: forwarding the bytes
    // early would let a client pass "XCLIENT ..." off as message content to us while
    // the backend, having refused DATA, reads it as a command.
    if (awaits == Awaits::Data || awaits == Awaits::StartTls) phase_ = Phase::Held;
}

CommandPairing::Verb CommandPairing::classify(std::string_view line) const {
    std::string_view verb = first_word(line);
    // Read alike by every backend's line limits (kMaxVerbStart).
    if (static_cast<size_t>(verb.data() - line.data()) > kMaxVerbStart) return Verb::Blocked;
    if (line.size() > options_.max_mode_line && (iequals(verb, "DATA") || iequals(verb, "STARTTLS")))
        return Verb::Blocked;
    // XCLIENT/XFORWARD: the relay hole this pairing exists for. BDAT: CHUNKING is
    // stripped from the EHLO reply, so BDAT is never legitimate, and letting it through
    // would make its binary chunk message content to the backend but command lines to
    // us. PROXY: a header is the load balancer's to send, never the client's.
    if (iequals(verb, "XCLIENT") || iequals(verb, "XFORWARD") || iequals(verb, "BDAT") ||
        iequals(verb, "PROXY"))
        return Verb::Blocked;
    if (iequals(verb, "STARTTLS")) {
        if (options_.terminate_starttls) return Verb::LocalStartTls;
        return options_.strip_starttls ? Verb::Blocked : Verb::StartTls;
    }
    if (iequals(verb, "EHLO")) return Verb::Ehlo;
    if (iequals(verb, "HELO")) return Verb::Helo;
    if (iequals(verb, "MAIL")) return Verb::Mail;
    if (iequals(verb, "RSET")) return Verb::Rset;
    if (iequals(verb, "DATA")) return Verb::Data;
    if (iequals(verb, "QUIT")) return Verb::Quit;
    return Verb::Other;
}

std::string CommandPairing::take_held() {
    std::string held;
    held.swap(held_);
    return held;
}

// The final "." is a command of its own as far as replies go: the backend answers it
// with the message's fate (RFC 5321 §4.1.1.4).
void CommandPairing::message_ended() {
    ++messages_sent_;
    phase_ = Phase::Command;
    awaiting_.push_back(Awaits::EndOfData);
}

// ---------------------------------------------------------------------------------
// Backend side

// The first backend output seen answers the client's first command (the proxy consumed
// the greeting); output with nothing awaiting it (a 421 before closing) is passed on
// without being counted.
CommandPairing::ReplyPiece CommandPairing::reply_piece(std::string_view segment) {
    ReplyPiece piece;
    if (!in_reply_) {
        in_reply_ = true;
        reply_counted_ = !awaiting_.empty();
        reply_awaits_ = reply_counted_ ? awaiting_.front() : Awaits::Other;
        piece.starts_reply = true;
    }
    if (reply_head_.size() < 4) reply_head_.append(segment.substr(0, 4 - reply_head_.size()));
    piece.answers_ehlo = reply_awaits_ == Awaits::Ehlo;
    piece.ours = reply_awaits_ == Awaits::OwnReset;
    piece.line_ends = !segment.empty() && segment.back() == '\n';
    piece.final = piece.line_ends && is_final_line(reply_head_);
    piece.head = reply_head_;
    return piece;
}

CommandPairing::Completed CommandPairing::line_complete(std::string& to_client) {
    const bool final = is_final_line(reply_head_);
    std::string code = reply_head_.substr(0, 3);
    reply_head_.clear();
    if (!final) return {};
    return reply_complete(code, to_client);
}

CommandPairing::Completed CommandPairing::reply_complete(std::string_view code, std::string& to_client) {
    Awaits awaits = reply_awaits_;
    if (reply_counted_) awaiting_.pop_front();
    in_reply_ = false;

    Completed done;
    track_transaction(awaits, code);
    if (awaits == Awaits::Quit && code == "221") quit_answered_ = true;
    if (awaits == Awaits::Data) {
        if (code == "354") {
            phase_ = Phase::Data;
            done.data_begins = true;
        } else {
            phase_ = Phase::Command;
        }
        done.release_held = true;
    } else if (awaits == Awaits::StartTls) {
        if (code == "220") {
            // RFC 3207 §4.2 / CVE-2011-0411: bytes sent after STARTTLS and before the
            // handshake are plain text that a man in the middle may have injected into
            // what will look like the TLS session. Discard them.
            phase_ = Phase::Transparent;
            held_.clear();
        } else {
            phase_ = Phase::Command;
            done.release_held = true;
        }
    }
    // Nothing is queued behind a DATA or STARTTLS (what follows them is held), so after
    // their reply this finds nothing to send.
    if (emit_local_replies(to_client)) done.release_held = true;
    return done;
}

// RFC 5321: a 2xx to MAIL opens a transaction (§4.1.1.2); RSET (§4.1.1.5) and an
// accepted HELO/EHLO (§4.1.4) end it, and so does the reply to the end of data, whatever
// it says (§4.1.1.4). A refused DATA or RCPT leaves it open.
void CommandPairing::track_transaction(Awaits awaits, std::string_view code) {
    const bool positive = !code.empty() && code.front() == '2';
    switch (awaits) {
    case Awaits::Mail:
        if (positive) in_transaction_ = true;
        return;
    case Awaits::Rset:
    case Awaits::OwnReset:
    case Awaits::Helo:
    case Awaits::Ehlo:
        if (positive) in_transaction_ = false;
        return;
    case Awaits::EndOfData: in_transaction_ = false; return;
    default: return;
    }
}

// Our own reply for an entry of awaiting_ (apart from the 220, which starts TLS), or
// empty for the backend's.
std::string_view CommandPairing::local_reply(Awaits awaits) {
    switch (awaits) {
    case Awaits::LocalSyntax: return kStartTlsSyntax;
    case Awaits::LocalTlsActive: return kTlsAlreadyActive;
    case Awaits::LocalTooLong: return kLineTooLong;
    default: return {};
    }
}

// Sends our own replies that are next in line: nothing owed before them, and no backend
// reply half-way out (not even an unsolicited one). Returns true when the last of them
// went out and the client bytes held behind it are to be read again; a STARTTLS among
// them ends the loop.
bool CommandPairing::emit_local_replies(std::string& to_client) {
    bool release = false;
    while (!in_reply_ && !awaiting_.empty() && phase_ != Phase::TlsStarting) {
        Awaits awaits = awaiting_.front();
        if (awaits == Awaits::LocalStartTls) {
            awaiting_.pop_front();
            const bool busy = in_transaction_;
            if (busy || (options_.take_tls_slot && !options_.take_tls_slot())) {
                // Refused (see the top of command_pairing.h): what the client sent after
                // it is commands again. Nothing was taken in behind it, so nothing is owed.
                to_client.append(busy ? kMailInProgress : kTlsTemporarilyUnavailable);
                phase_ = Phase::Command;
                release = !held_.empty();
                continue;
            }
            to_client.append(kReadyToStartTls);
            discard_after_starttls(held_.size());
            held_.clear();
            phase_ = Phase::TlsStarting;
            return release;
        }
        std::string_view reply = local_reply(awaits);
        if (reply.empty()) return release;
        awaiting_.pop_front();
        to_client.append(reply);
        // A hold with nothing left owed is this reply's (a DATA's hold keeps its own entry
        // in awaiting_ until its reply).
        if (awaiting_.empty() && phase_ == Phase::Held) {
            phase_ = Phase::Command;
            release = true;
        }
    }
    return release;
}

void CommandPairing::tls_established() {
    if (phase_ != Phase::TlsStarting) return;
    phase_ = Phase::Command;
    tls_active_ = true;
}

// Nothing is owed when the handshake ends (our 220 went out last), so the backend's next
// reply is this RSET's, before any to the client's commands in TLS.
void CommandPairing::reset_backend(std::string& to_backend) {
    to_backend.append(kResetAfterTls);
    ++commands_sent_;
    awaiting_.push_back(Awaits::OwnReset);
}

}  // namespace smtpscreen
