#pragma once
// The small SMTP responder of the `enforce` action: it talks to a client that failed a
// test until the client gives up, answers each command correctly, and rejects every
// RCPT TO with the failed test's reply, logging postscreen's NOQUEUE line. No I/O here.
#include <functional>
#include <string>

#include "screen/command_reader.h"

namespace smtpscreen {

class EnforceDialog {
public:
    struct Reply {
        std::string text;    // one or more CRLF-terminated reply lines
        bool close = false;      // after sending text (QUIT, too many errors)
        bool start_tls = false;  // after sending text (the 220 to STARTTLS): start the handshake
    };
    using RejectLog = std::function<void(const std::string& line)>;

    // client: "[1.2.3.4]:5678"; reject_reply: e.g. "550 5.7.1 Service unavailable; client
    // [1.2.3.4] blocked using zen.example" (no CRLF). log gets the whole
    // "NOQUEUE: reject: RCPT from [ip]:port: 550 ...; from=<s>, to=<r>, proto=ESMTP, helo=<h>" line.
    EnforceDialog(std::string hostname, std::string client, std::string reject_reply, RejectLog log);

    Reply on_line(const CommandLine& line);
    // A DNSBL answer that arrives after the verdict can name a higher-weighted zone;
    // the next RCPT reply names that one.
    void set_reject_reply(std::string reply) { reject_reply_ = std::move(reply); }
    // tls.cert and tls.key are loaded: offer STARTTLS (SPEC §3, also to rejected clients,
    // so that what they send us is not readable on the wire).
    void offer_starttls(bool on) { tls_available_ = on; }
    // The handshake after our 220 is done: RFC 3207 §4.2, forget the HELO and the sender.
    void tls_established();

private:
    Reply dispatch(const SmtpCommand& cmd);
    Reply ehlo(const std::string& args);
    Reply helo(const std::string& args);
    Reply mail(const std::string& args);
    Reply rcpt(const std::string& args);

    std::string hostname_;
    std::string client_;
    std::string reject_reply_;
    RejectLog log_;
    bool tls_available_ = false;
    bool tls_active_ = false;
    std::string helo_;
    std::string proto_ = "SMTP";
    std::string mail_from_;
    bool have_mail_ = false;
    int errors_ = 0;
};

}  // namespace smtpscreen
