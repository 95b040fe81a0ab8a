#pragma once
// What the deep-test dialog may offer in its EHLO reply (deep.ehlo_keywords). A
// first-time client is promised what the backend will keep after the replay: the
// backend's own keywords (each an EHLO line without its "250-", parameters included,
// "SIZE 10240000"), less those the dialog itself cannot keep before the handoff.
// Pure functions over text; the proxy learns the backend's reply (proxy/backend_offer.h).
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen {

// postscreen's own list (postscreen_smtpd.c) less VRFY, CHUNKING and PIPELINING: what
// the dialog offers when nothing else is known (the enforce action, the unit tests).
std::vector<std::string> postscreen_ehlo_keywords();

// Why the dialog cannot offer this EHLO line (by its keyword, any case), or empty
// when it can: XCLIENT and XFORWARD would let a client forge its address, BDAT is
// refused before the handoff, STARTTLS comes from tls.cert, PIPELINING would make
// the pipelining test a lie, AUTH, VRFY and HELP are not answered before the handoff.
std::string_view unofferable_reason(std::string_view ehlo_line);

// An EHLO line as RFC 5321 4.1.1.1 writes one: a keyword of letters, digits and
// hyphens (starting with a letter or digit), then optional space-separated
// parameters of printable ASCII.
bool valid_ehlo_line(std::string_view ehlo_line);

// The keyword lines of a whole 250 reply to EHLO (CRLFs included): every line after
// the first (which names the server), without "250-" / "250 ". Lines that are not
// valid EHLO lines are left out.
std::vector<std::string> ehlo_reply_keywords(std::string_view reply);

// keywords without those unofferable_reason() refuses, in their order.
std::vector<std::string> offerable_keywords(const std::vector<std::string>& keywords);

// TLS before the backend (docs/design.md, "TLS"): no test runs, and every command but
// HELO/EHLO, STARTTLS, NOOP, RSET and QUIT goes to the backend, so the client is
// offered what the relay would show it of the backend's reply (PIPELINING, AUTH, VRFY
// and HELP included), less what the relay strips (XCLIENT, XFORWARD, CHUNKING and its
// BINARYMIME), the backend's STARTTLS (smtpscreen's own is offered) and early
// pipelining (PIPE_CONNECT: the client would talk before our greeting).
std::vector<std::string> tls_first_keywords(const std::vector<std::string>& keywords);

}  // namespace smtpscreen
