// Fuzz target: screen/smtp_dialog.h. The input is the byte stream a client sends to
// the SMTP dialog smtpscreen speaks itself. Its first byte picks the configuration (mode,
// which deep tests run, deep.action, STARTTLS offered, the command count limit); the
// rest is fed whole and in pieces cut where the input decides. What must hold:
//   - every Reply is whole CRLF-terminated reply lines ("NNN text" / "NNN-text"), the
//     last one final, in printable ASCII: no client byte reaches a reply;
//   - every Log and Violation line is printable ASCII (a client cannot forge or split a
//     log line);
//   - at most command_count_limit + 1 replies (the last one the 421), then Close;
//   - nothing after Close, Handoff or StartTls, and feed() returns nothing afterwards;
//   - Handoff only in Deep mode, never once the dialog enforces, with a transaction
//     whose replay is a HELO/EHLO, a MAIL and a RCPT line; or in TlsFirst mode, with at
//     most a HELO/EHLO, and what is left for the backend is the input from a line's
//     start to its end, the same however TCP cut the stream;
//   - HealthCheck mode (a load balancer's check) never starts TLS, never hands off,
//     runs no test and answers only 250, 221, 421, 500, 501 or 502;
//   - without the pipelining test, the events do not depend on how TCP cut the stream
//     (LineStarted aside: it marks the cuts);
//   - time_limit_exceeded() on a dialog still talking gives Log, Reply 421, Close.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "screen/smtp_dialog.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;
using Kind = DialogEvent::Kind;

namespace {

constexpr Action kActions[] = {Action::Ignore, Action::Enforce, Action::Drop, Action::Tarpit};

// Bit 0: Deep; otherwise bit 1: HealthCheck, else bit 2: TlsFirst, else Enforce.
DialogOptions options_from(uint8_t pick) {
    DialogOptions o;
    o.mode = (pick & 1)   ? DialogMode::Deep
             : (pick & 2) ? DialogMode::HealthCheck
             : (pick & 4) ? DialogMode::TlsFirst
                          : DialogMode::Enforce;
    if (o.mode == DialogMode::Deep) {
        o.pipelining = pick & 2;
        o.non_smtp = pick & 4;
        o.bare_newline = pick & 8;
        o.action = kActions[(pick >> 4) % 4];
    }
    // as health_check_options and tls_first_options
    o.tls_available = o.mode == DialogMode::TlsFirst || ((pick & 0x40) && o.mode != DialogMode::HealthCheck);
    o.command_count_limit = (pick & 0x80) ? 3 : 20;
    o.hostname = "mx.example.net";
    o.client = "[192.0.2.1]:5678";
    o.reject_reply = "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example";
    return o;
}

bool printable(std::string_view text) {
    for (char c : text) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
    }
    return true;
}

void check_reply(const std::string& text) {
    FUZZ_CHECK(text.size() >= 6 && text.compare(text.size() - 2, 2, "\r\n") == 0, "reply " + escaped(text));
    size_t start = 0;
    while (start < text.size()) {
        const size_t end = text.find("\r\n", start);
        FUZZ_CHECK(end != std::string::npos, "reply line without CRLF in " + escaped(text));
        const std::string_view line = std::string_view(text).substr(start, end - start);
        const bool last = end + 2 == text.size();
        FUZZ_CHECK(line.size() >= 4 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
                       line[2] >= '0' && line[2] <= '9' && line[3] == (last ? ' ' : '-'),
                   "reply line " + escaped(line) + " in " + escaped(text));
        FUZZ_CHECK(printable(line), "client bytes in reply " + escaped(text));
        start = end + 2;
    }
}

struct Transcript {
    std::vector<DialogEvent> events;  // LineStarted left out
    bool ended = false;               // Close or Handoff seen
    bool awaiting_tls = false;        // StartTls seen
    size_t replies = 0;
};

// Checks one feed's events as they come and adds them to the transcript.
void take(Transcript& t, std::vector<DialogEvent> events, const SmtpDialog& dialog, const DialogOptions& o,
          std::string_view in) {
    for (DialogEvent& e : events) {
        FUZZ_CHECK(!t.ended, "event after Close/Handoff for input " + escaped(in));
        FUZZ_CHECK(!t.awaiting_tls, "event after StartTls for input " + escaped(in));
        switch (e.kind) {
        case Kind::Reply:
            check_reply(e.text);
            if (o.mode == DialogMode::HealthCheck) {
                const std::string code = e.text.substr(0, 3);
                FUZZ_CHECK(code == "250" || code == "221" || code == "421" || code == "500" || code == "501" ||
                               code == "502",
                           "health check answered " + escaped(e.text) + " for input " + escaped(in));
            }
            ++t.replies;
            FUZZ_CHECK(t.replies <= static_cast<size_t>(o.command_count_limit) + 1,
                       std::to_string(t.replies) + " replies for input " + escaped(in));
            break;
        case Kind::Violation:
            FUZZ_CHECK(o.mode == DialogMode::Deep && e.test != Test::Count, "violation " + escaped(e.text));
            [[fallthrough]];
        case Kind::Log: FUZZ_CHECK(printable(e.text), "log line " + escaped(e.text)); break;
        case Kind::LineStarted: continue;
        case Kind::StartTls:
            FUZZ_CHECK(o.tls_available, "STARTTLS started without a certificate");
            t.awaiting_tls = true;
            break;
        case Kind::Handoff: {
            if (o.mode == DialogMode::TlsFirst) {
                FUZZ_CHECK(e.tx.helo_verb.empty() || e.tx.helo_verb == "EHLO" || e.tx.helo_verb == "HELO",
                           "TlsFirst replays " + escaped(e.tx.helo_verb));
                FUZZ_CHECK(e.tx.helo_name.find(' ') == std::string::npos, "TlsFirst replays " + escaped(e.tx.helo_name));
                FUZZ_CHECK(e.tx.mail_line.empty() && e.tx.rcpt_line.empty(), "TlsFirst handed off a transaction");
                t.ended = true;
                break;
            }
            FUZZ_CHECK(o.mode == DialogMode::Deep && !dialog.enforcing(), "handoff while enforcing");
            const std::vector<std::string> replay = e.tx.replay_lines();
            FUZZ_CHECK(e.tx.helo_verb == "EHLO" || e.tx.helo_verb == "HELO", "replayed " + escaped(replay[0]));
            FUZZ_CHECK(!e.tx.helo_name.empty() && e.tx.helo_name.find(' ') == std::string::npos,
                       "replayed " + escaped(replay[0]));
            FUZZ_CHECK(e.tx.mail_line.size() >= 5 && e.tx.rcpt_line.size() >= 5, "replayed MAIL/RCPT");
            for (const std::string& line : replay) {
                FUZZ_CHECK(line.find('\n') == line.size() - 1, "replay line " + escaped(line));
            }
            t.ended = true;
            break;
        }
        case Kind::Close: t.ended = true; break;
        }
        t.events.push_back(std::move(e));
    }
}

bool same(const std::vector<DialogEvent>& a, const std::vector<DialogEvent>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (a[i].kind != b[i].kind || a[i].text != b[i].text || a[i].test != b[i].test) return false;
        if (a[i].tx.replay_lines() != b[i].tx.replay_lines()) return false;
    }
    return true;
}

void finish(const Transcript& t, SmtpDialog& dialog, std::string_view in) {
    if (t.ended) {
        FUZZ_CHECK(dialog.finished(), "Close/Handoff but not finished()");
        FUZZ_CHECK(dialog.feed("QUIT\r\n").empty(), "feed() answered after the end");
        FUZZ_CHECK(dialog.time_limit_exceeded().empty(), "time limit after the end");
        return;
    }
    const std::vector<DialogEvent> timeout = dialog.time_limit_exceeded();
    FUZZ_CHECK(timeout.size() == 3 && timeout[0].kind == Kind::Log && timeout[1].kind == Kind::Reply &&
                   timeout[1].text.rfind("421 4.4.2 ", 0) == 0 && timeout[2].kind == Kind::Close,
               "time_limit_exceeded() for input " + escaped(in));
    FUZZ_CHECK(dialog.finished(), "not finished after the time limit");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const DialogOptions o = options_from(data[0]);
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

    // 1. The stream in one read.
    SmtpDialog whole(o);
    Transcript w;
    take(w, whole.feed(in), whole, o, in);

    // 2. The same stream in pieces cut where the input decides: mostly short ones, as
    //    from a slow client, sometimes long ones.
    SmtpDialog cut(o);
    Transcript c;
    fuzz::InputRandom rnd(in);
    for (size_t pos = 0; pos < in.size();) {
        const size_t cap = rnd.below(4) == 0 ? in.size() - pos : std::min<size_t>(in.size() - pos, 16);
        const size_t n = 1 + rnd.below(cap);
        take(c, cut.feed(in.substr(pos, n)), cut, o, in);
        pos += n;
    }
    if (!o.pipelining) {
        FUZZ_CHECK(same(w.events, c.events), "whole and in pieces differ for input " + escaped(in));
    }
    if (o.mode == DialogMode::TlsFirst && !w.events.empty() && w.events.back().kind == Kind::Handoff) {
        const std::string rest = whole.take_unprocessed();
        FUZZ_CHECK(rest == cut.take_unprocessed(), "left for the backend differs whole and in pieces: " + escaped(in));
        FUZZ_CHECK(!rest.empty() && in.ends_with(rest) && (rest.size() == in.size() || in[in.size() - rest.size() - 1] == '\n'),
                   "left for the backend " + escaped(rest) + " is not the input from a line's start: " + escaped(in));
    }
    finish(w, whole, in);
    finish(c, cut, in);

    // 3. Line by line, with the TLS handshake "succeeding" whenever STARTTLS asks for
    //    it, so the dialog after TLS is reached too.
    SmtpDialog tls(o);
    Transcript t;
    for (size_t pos = 0; pos < in.size();) {
        size_t lf = in.find('\n', pos);
        lf = lf == std::string_view::npos ? in.size() : lf + 1;
        take(t, tls.feed(in.substr(pos, lf - pos)), tls, o, in);
        if (t.awaiting_tls) {
            tls.tls_established();
            t.awaiting_tls = false;
        }
        pos = lf;
    }
    finish(t, tls, in);
    return 0;
}
