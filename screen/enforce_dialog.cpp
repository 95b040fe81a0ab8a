#include "screen/enforce_dialog.h"

#include <string_view>
#include <utility>

namespace smtpscreen {
namespace {

// smtpd_hard_error_limit's default: after this many error replies the client is told
// 421 and disconnected, as Postfix smtpd does (postscreen relies on its command count
// limit instead; the session enforces that one, this is the backstop).
constexpr int kHardErrorLimit = 20;

std::string crlf(std::string_view reply) {
    std::string out(reply);
    out += "\r\n";
    return out;
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

bool has_argument(const std::string& args) { return args.find_first_not_of(' ') != std::string::npos; }

}  // namespace

EnforceDialog::EnforceDialog(std::string hostname, std::string client, std::string reject_reply, RejectLog log)
    : hostname_(std::move(hostname)),
      client_(std::move(client)),
      reject_reply_(std::move(reject_reply)),
      log_(std::move(log)) {}

EnforceDialog::Reply EnforceDialog::on_line(const CommandLine& line) {
    Reply reply;
    if (line.too_long) {
        // SPEC §4 wording. postscreen itself hangs up with 421 at line_length_limit
        // (2048); we answer at RFC 5321's 512 and let the error limit end it.
        reply.text = crlf("500 5.5.2 Line too long");
    } else {
        reply = dispatch(parse_command(line.text));
    }
    if (reply.close) return reply;
    if (!reply.text.empty() && (reply.text[0] == '4' || reply.text[0] == '5') && ++errors_ >= kHardErrorLimit) {
        reply.text += crlf("421 4.7.0 " + hostname_ + " Error: too many errors");
        reply.close = true;
    }
    return reply;
}

// Replies follow postscreen_smtpd.c word for word unless a comment says otherwise.
EnforceDialog::Reply EnforceDialog::dispatch(const SmtpCommand& cmd) {
    const std::string& verb = cmd.verb;
    if (verb == "EHLO") return ehlo(cmd.args);
    if (verb == "HELO") return helo(cmd.args);
    if (verb == "MAIL") return mail(cmd.args);
    if (verb == "RCPT") return rcpt(cmd.args);
    if (verb == "DATA") {
        if (has_argument(cmd.args)) return {crlf("501 5.5.4 Syntax: DATA")};
        if (!have_mail_) return {crlf("503 5.5.1 Error: need RCPT command")};
        // Every RCPT was rejected, so there is never a recipient to accept data for.
        return {crlf("554 5.5.1 Error: no valid recipients")};
    }
    if (verb == "RSET") {
        have_mail_ = false;
        mail_from_.clear();
        return {crlf("250 2.0.0 Ok")};
    }
    if (verb == "NOOP") return {crlf("250 2.0.0 Ok")};
    if (verb == "QUIT") return {crlf("221 2.0.0 Bye"), true};
    if (verb == "VRFY") {
        // postscreen with postscreen_disable_vrfy_command = yes; SPEC §4 wants VRFY
        // refused, not answered with the reject reply (postscreen's default).
        if (!has_argument(cmd.args)) return {crlf("501 5.5.4 Syntax: VRFY address")};
        return {crlf("502 5.5.1 VRFY command is disabled")};
    }
    if (verb == "EXPN") {
        // postscreen has no EXPN (it answers "command not recognized"); SPEC §4 asks
        // for 502 5.5.1 for both VRFY and EXPN, so EXPN is worded like VRFY.
        return {crlf("502 5.5.1 EXPN command is disabled")};
    }
    if (verb == "ETRN") {
        if (helo_.empty()) return {crlf("503 5.5.1 Error: send HELO/EHLO first")};
        if (!has_argument(cmd.args)) return {crlf("500 Syntax: ETRN domain")};
        return {crlf("458 Unable to queue messages")};
    }
    if (verb == "STARTTLS" && tls_available_) {
        if (has_argument(cmd.args)) return {crlf("501 5.5.4 Syntax: STARTTLS")};
        if (tls_active_) return {crlf("554 5.5.1 Error: TLS already active")};
        return {crlf("220 2.0.0 Ready to start TLS"), false, true};
    }
    if (verb == "STARTTLS" || verb == "AUTH" || verb == "XCLIENT" || verb == "XFORWARD" || verb == "BDAT") {
        // None of these is offered in our EHLO reply. postscreen words STARTTLS this
        // way when TLS is off; we use the same reply for the rest of them.
        return {crlf("502 5.5.1 Error: command not implemented")};
    }
    return {crlf("502 5.5.2 Error: command not recognized")};
}

EnforceDialog::Reply EnforceDialog::ehlo(const std::string& args) {
    const size_t start = args.find_first_not_of(' ');
    if (start == std::string::npos) return {crlf("501 Syntax: EHLO hostname")};
    // postscreen keeps the first word only (smtpd keeps them all).
    helo_ = args.substr(start, args.find(' ', start) - start);
    proto_ = "ESMTP";
    have_mail_ = false;  // RFC 5321 §4.1.4: EHLO resets the transaction
    mail_from_.clear();
    // postscreen's list without VRFY (disabled) and STARTTLS; never PIPELINING, so
    // that a client that pipelines anyway shows itself (postscreen_smtpd.c).
    const char* starttls = tls_available_ && !tls_active_ ? "250-STARTTLS\r\n" : "";
    return {"250-" + hostname_ + "\r\n250-SIZE\r\n250-ETRN\r\n" + starttls +
            "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n"};
}

void EnforceDialog::tls_established() {
    tls_active_ = true;
    helo_.clear();
    proto_ = "SMTP";
    have_mail_ = false;
    mail_from_.clear();
}

EnforceDialog::Reply EnforceDialog::helo(const std::string& args) {
    const size_t start = args.find_first_not_of(' ');
    if (start == std::string::npos) return {crlf("501 Syntax: HELO hostname")};
    helo_ = args.substr(start, args.find(' ', start) - start);
    // Like postscreen, HELO after EHLO does not downgrade proto= to SMTP.
    have_mail_ = false;
    mail_from_.clear();
    return {crlf("250 " + hostname_)};
}

EnforceDialog::Reply EnforceDialog::mail(const std::string& args) {
    if (helo_.empty()) return {crlf("503 5.5.1 Error: send HELO/EHLO first")};
    if (have_mail_) return {crlf("503 5.5.1 Error: nested MAIL command")};
    if (args.find(':') == std::string::npos) return {crlf("501 5.5.4 Syntax: MAIL FROM:<address>")};
    const auto addr = mail_address(args, "FROM");
    if (!addr) return {crlf("501 5.1.7 Bad sender address syntax")};
    mail_from_ = std::string(without_source_route(*addr));
    have_mail_ = true;
    return {crlf("250 2.1.0 Ok")};
}

EnforceDialog::Reply EnforceDialog::rcpt(const std::string& args) {
    if (!have_mail_) return {crlf("503 5.5.1 Error: need MAIL command")};
    if (args.find(':') == std::string::npos) return {crlf("501 5.5.4 Syntax: RCPT TO:<address>")};
    const auto addr = mail_address(args, "TO");
    if (!addr) return {crlf("501 5.1.3 Bad recipient address syntax")};
    // postscreen's NOQUEUE line, which fail2ban's stock postfix filter matches.
    if (log_) {
        log_("NOQUEUE: reject: RCPT from " + client_ + ": " + reject_reply_ + "; from=<" + printable(mail_from_) +
             ">, to=<" + printable(without_source_route(*addr)) + ">, proto=" + proto_ + ", helo=<" + printable(helo_) +
             ">");
    }
    return {crlf(reject_reply_)};
}

}  // namespace smtpscreen
