#pragma once
// What a client that passed the deep tests said before its first RCPT TO, kept so that
// the handoff can replay it to the backend (README: deep protocol tests). Plain data,
// no I/O: the dialog's deep mode (screen/smtp_dialog.h) fills it in, the session
// consumes it, as OpenSMTPD keeps its `struct smtp_tx` apart from the session that owns it.
#include <string>
#include <vector>

namespace smtpscreen {

struct SmtpTransaction {
    std::string helo_verb;  // "EHLO" or "HELO", whichever the client sent last (upper case)
    std::string helo_name;  // the first word after it, as sent ("mx.example.org", "[192.0.2.1]")
    std::string mail_line;  // the MAIL command line verbatim, without its line ending, parameters
                            // included: "MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8"
    std::string mail_from;  // the reverse path alone ("" for the null sender), for logs
    std::string rcpt_line;  // the first RCPT command line verbatim, without its line ending
    std::string rcpt_to;    // the forward path alone, for logs
    bool tls = false;       // the client did STARTTLS with us before these commands

    // The commands to send to the backend, in order, each CRLF-terminated. HELO/EHLO is
    // rebuilt from verb and name (postscreen keeps the first word only); MAIL and RCPT
    // go out as the client sent them, whatever their parameters, so the backend judges
    // the same SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY or ORCPT the client asked for.
    std::vector<std::string> replay_lines() const {
        return {helo_verb + " " + helo_name + "\r\n", mail_line + "\r\n", rcpt_line + "\r\n"};
    }
};

}  // namespace smtpscreen
