#pragma once
// Every SMTP reply smtpscreen writes itself, in one place, so that the dialog's modes
// and the session cannot drift apart (they once answered ETRN two different ways).
// Worded as postscreen_smtpd.c words them, or as smtpd(8) does where postscreen has no
// such reply, so that a client meets the same server before and after the handoff to
// a Postfix backend; a comment says where we differ and why.
//
// The constants are single reply lines without their CRLF; the functions that build a
// whole reply say so. The relay filter's own replies (after handoff) live with it.
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen::replies {

inline std::string crlf(std::string_view line) {
    std::string out(line);
    out += "\r\n";
    return out;
}

// ---------------------------------------------------------------- connection

// The greet wait sends the first line of a multi-line greeting (a client that talks
// before the last line is a pregreet bot); the final line comes from us or the backend.
inline std::string greeting_first_line(std::string_view banner) { return crlf("220-" + std::string(banner)); }
inline std::string greeting(std::string_view banner) { return crlf("220 " + std::string(banner)); }

// smtpd(8)'s words for its own connection limits, our name (greet.hostname) included.
inline std::string too_many_connections(std::string_view hostname) {
    return "421 4.7.0 " + std::string(hostname) + " Error: too many connections";
}
inline std::string too_many_connections_from(std::string_view hostname, std::string_view ip) {
    return too_many_connections(hostname) + " from " + std::string(ip);
}
inline constexpr std::string_view kBackendUnavailable = "421 4.3.2 Service temporarily unavailable";

// ---------------------------------------------------------------- failed tests (README: actions)

// enforce: the answer to every RCPT TO.
inline std::string dnsbl_reject(std::string_view ip, std::string_view zone) {
    return "550 5.7.1 Service unavailable; client [" + std::string(ip) + "] blocked using " + std::string(zone);
}
inline constexpr std::string_view kProtocolError = "550 5.5.1 Protocol error";        // pregreet, deep tests
inline constexpr std::string_view kAccessReject = "550 5.3.2 Service currently unavailable";  // access list
// drop: the only thing the client hears before we close.
inline constexpr std::string_view kDropDnsbl = "521 5.7.1 Service unavailable";
inline constexpr std::string_view kDropProtocol = "521 5.5.1 Protocol error";
inline constexpr std::string_view kDropAccess = "521 5.3.2 Service currently unavailable";
// ban.action = drop: what a banned client hears at connect, before the close.
inline constexpr std::string_view kBanned = "521 5.7.1 Service unavailable";
// ban.action = tarpit: the answer to every RCPT TO of a banned client.
inline constexpr std::string_view kBannedReject = "550 5.7.1 Service unavailable";

// greylist.enable: the first RCPT TO of a new triplet (edge/greylist.h). postgrey's
// default words are "450 4.2.0 <rcpt>: Recipient address rejected: Greylisted for 300
// seconds"; these are the README's, and name neither the recipient nor the delay, which
// would tell a bot how long to wait.
inline constexpr std::string_view kGreylisted = "450 4.2.0 Greylisted, try again later";

// ---------------------------------------------------------------- the dialog (screen/smtp_dialog.h)

inline std::string helo(std::string_view hostname) { return "250 " + std::string(hostname); }

// The whole multi-line EHLO reply, CRLFs included: our name, then each keyword line
// (deep.ehlo_keywords: by default the backend's own, screen/ehlo_keywords.h), STARTTLS
// first when tls.cert is set. PIPELINING is never among them, so that a client
// that pipelines anyway shows itself.
inline std::string ehlo(std::string_view hostname, const std::vector<std::string>& keywords, bool starttls) {
    std::vector<std::string_view> lines;
    if (starttls) lines.emplace_back("STARTTLS");
    lines.insert(lines.end(), keywords.begin(), keywords.end());
    std::string text = std::string(lines.empty() ? "250 " : "250-") + std::string(hostname) + "\r\n";
    for (size_t i = 0; i < lines.size(); ++i) {
        text += i + 1 == lines.size() ? "250 " : "250-";
        text += lines[i];
        text += "\r\n";
    }
    return text;
}

inline constexpr std::string_view kOk = "250 2.0.0 Ok";
inline constexpr std::string_view kSenderOk = "250 2.1.0 Ok";
// Postfix says "221 2.0.0 Bye"; RFC 5321 4.2.2 has the server name itself in its 221,
// so a client's transcript names one server from banner to goodbye.
inline std::string bye(std::string_view hostname) { return "221 2.0.0 " + std::string(hostname) + " Bye"; }
inline constexpr std::string_view kReadyToStartTls = "220 2.0.0 Ready to start TLS";
// tls.max_pending_handshakes reached: the client may go on in plain text or come back.
inline constexpr std::string_view kTlsTemporarilyUnavailable = "454 4.7.0 TLS not available due to temporary reason";

inline std::string helo_syntax(std::string_view verb) { return "501 Syntax: " + std::string(verb) + " hostname"; }
inline constexpr std::string_view kSendHeloFirst = "503 5.5.1 Error: send HELO/EHLO first";
inline constexpr std::string_view kNestedMail = "503 5.5.1 Error: nested MAIL command";
inline constexpr std::string_view kMailSyntax = "501 5.5.4 Syntax: MAIL FROM:<address>";
inline constexpr std::string_view kBadSender = "501 5.1.7 Bad sender address syntax";
inline constexpr std::string_view kNeedMail = "503 5.5.1 Error: need MAIL command";
inline constexpr std::string_view kRcptSyntax = "501 5.5.4 Syntax: RCPT TO:<address>";
inline constexpr std::string_view kBadRecipient = "501 5.1.3 Bad recipient address syntax";
inline constexpr std::string_view kDataSyntax = "501 5.5.4 Syntax: DATA";
inline constexpr std::string_view kNeedRcpt = "503 5.5.1 Error: need RCPT command";
// The dialog accepts no recipient, so DATA never has one. postscreen hangs up after
// this reply; we keep listening, as smtpd(8) does, and let the limits end it.
inline constexpr std::string_view kNoValidRecipients = "554 5.5.1 Error: no valid recipients";
inline constexpr std::string_view kStarttlsSyntax = "501 5.5.4 Syntax: STARTTLS";
inline constexpr std::string_view kTlsAlreadyActive = "554 5.5.1 Error: TLS already active";
// STARTTLS between MAIL and the end of its transaction. smtpd(8) takes it there and
// forgets the transaction; behind smtpscreen the backend would not, so it is refused
// (docs/design.md, "TLS"), in smtpd's words for a command that a transaction forbids (AUTH).
inline constexpr std::string_view kMailInProgress = "503 5.5.1 Error: MAIL transaction in progress";
// VRFY as postscreen with postscreen_disable_vrfy_command = yes: docs/design.md,
// "Hostile input", wants VRFY refused, not answered with the reject reply (postscreen's default).
inline constexpr std::string_view kVrfySyntax = "501 5.5.4 Syntax: VRFY address";
inline constexpr std::string_view kVrfyDisabled = "502 5.5.1 VRFY command is disabled";
// postscreen has no EXPN (it answers "command not recognized"); docs/design.md,
// "Hostile input", asks for 502 5.5.1 for both VRFY and EXPN, so EXPN is worded like VRFY.
inline constexpr std::string_view kExpnDisabled = "502 5.5.1 EXPN command is disabled";
inline constexpr std::string_view kEtrnSyntax = "500 Syntax: ETRN domain";
inline constexpr std::string_view kEtrnRefused = "458 Unable to queue messages";
// STARTTLS without a certificate; also AUTH, XCLIENT, XFORWARD and BDAT, none of which
// is offered (postscreen refuses those the same way whatever the words).
inline constexpr std::string_view kNotImplemented = "502 5.5.1 Error: command not implemented";
inline constexpr std::string_view kNotRecognized = "502 5.5.2 Error: command not recognized";
// RFC 5321 §4.5.3.1.4: 512 octets with the CRLF. postscreen hangs up with 421 at
// line_length_limit (2048); we answer at 512 and let the command count end it.
inline constexpr std::string_view kLineTooLong = "500 5.5.2 Line too long";

// limits.command_time_limit (postscreen_command_time_limit).
inline std::string timeout_exceeded(std::string_view hostname) {
    return "421 4.4.2 " + std::string(hostname) + " Error: timeout exceeded";
}
// limits.command_count_limit (postscreen_command_count_limit). postscreen answers
// "421 <host> Service unavailable - try again later"; ours says what ran out, with an
// enhanced status code like every other reply here.
inline std::string too_many_commands(std::string_view hostname) {
    return "421 4.7.0 " + std::string(hostname) + " Error: too many commands";
}

}  // namespace smtpscreen::replies
