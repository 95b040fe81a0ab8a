// Fuzz target: proxy/relay_filter.h, the relay between a handed-off client and the
// backend. The input is the client's byte stream (and the filter's options). It goes
// through the filter in pieces the input decides, and what the filter forwards goes to
// two model backends that read it as real MTAs do:
//   - Postfix-like: a command is the line up to LF; past line_length_limit (2,048)
//     octets the rest of the line is skipped (smtp_get with SMTP_GET_FLAG_SKIP);
//   - Exim-like: a command is the line up to LF; past 16,384 octets the command ends,
//     one octet is lost and reading goes on as a new command (smtp_read_command).
// Both take LF alone as a line end, and a "." line (CRs before its LF dropped) as the
// end of data, as lenient servers do. Each answers as a small model MTA (250 to most
// commands, a multi-line EHLO reply offering XCLIENT, XFORWARD, STARTTLS and CHUNKING,
// 354 to DATA, 501 to DATA with an argument, 454 to STARTTLS), and the Postfix-like one's
// replies go back into the filter, in pieces and at moments the input decides, so the
// filter pairs them with the commands in flight as it would in a session.
//
// The run fails when:
//   - the two backends disagree on which commands they ran or where a message began and
//     ended (each command: its first 32 octets);
//   - either ran a different number of commands, or saw a different number of ends of
//     data, than the filter says it forwarded (commands_sent(), messages_sent()): where a
//     command or the data ends, the backends and the filter disagree;
//   - either ran XCLIENT, XFORWARD, BDAT or PROXY, or a STARTTLS the filter must keep
//     from the backend; or a command that is not a whole line the client sent (or the
//     filter's XSMTPSCREEN-BLOCKED, or its RSET after the client's TLS handshake); or the
//     Exim-like one met a line over 16,384 octets;
//   - a bare CR or bare LF reached a backend inside DATA;
//   - the client was shown XCLIENT, XFORWARD or CHUNKING;
//   - the filter keeps more than a command line's worth of bytes while not holding.
//
// Input: the first octet picks the options (bit 0: smuggling.bare_lf = normalize; bits
// 1-2: STARTTLS passed to the backend, blocked, terminated by smtpscreen, or terminated
// and already active; bit 3: small limits, so short inputs reach them: the filter's
// command line limit 64, Postfix-like 48, Exim-like 100; bit 4: the backend holds a
// transaction from the start, as after the deep tests' replay). The rest is the client's bytes,
// where 0xFF N C stands for the octet C repeated (N + 1) * 128 times, so that lines of
// 16 KB and more are a few octets away (64 KiB in all at most).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "proxy/relay_filter.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;

namespace {

constexpr size_t kMaxExpanded = 64 * 1024;   // room for a few lines over 16 KB
constexpr std::string_view kBlocked = "XSMTPSCREEN-BLOCKED\r";
constexpr std::string_view kOwnReset = "RSET\r";   // the filter's, after the client's handshake

struct Limits {
    size_t filter;    // RelayFilter::Options::max_command_line
    size_t mode;      // RelayFilter::Options::max_mode_line: below the Postfix-like limit
    size_t postfix;   // octets of a command line kept before the rest is skipped
    size_t exim;      // octets of a command line after which the next octet ends it
};
constexpr Limits kProduction{CommandPairing::kMaxCommandLine, CommandPairing::kMaxModeLine, 2048, 16384};
constexpr Limits kSmall{64, 40, 48, 100};

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

// The verb as both models look it up: leading blanks skipped, up to a blank or a colon,
// case-insensitive. (Postfix's smtpd_token() and Exim's command table read it no more
// loosely than this; the filter's own reading, proxy/smtp_words.h, is looser.)
std::string verb_of(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::string verb;
    for (; i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != ':'; ++i) verb += upper(line[i]);
    while (!verb.empty() && verb.back() == '\r') verb.pop_back();
    return verb;
}

bool has_argument(std::string_view line) {
    std::string_view rest = line;
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    size_t end = rest.find_first_of(" \t:");
    if (end == std::string_view::npos) return false;
    rest.remove_prefix(end);
    return rest.find_first_not_of(" \t\r") != std::string_view::npos;
}

struct Context {
    RelayFilter::Options options;
    Limits limits;
    std::unordered_set<std::string_view> client_lines;   // every whole line the client sent, without its LF
    std::string_view input;
    std::string where() const {
        return " (options: normalize " + std::to_string(options.bare_lf == BareLf::Normalize) + ", strip " +
               std::to_string(options.strip_starttls) + ", terminate " + std::to_string(options.terminate_starttls) +
               ", command line limit " + std::to_string(limits.filter) + ")";
    }
};

// A model backend: reads the bytes the filter forwards as a real MTA's line reader does.
class ModelBackend {
public:
    enum class Reader { Postfix, Exim };

    ModelBackend(Reader reader, const Context& ctx) : reader_(reader), ctx_(ctx) {}

    void feed(std::string_view bytes) {
        for (char c : bytes) (in_data_ ? data_octet(c) : command_octet(c));
    }

    const std::vector<std::string>& events() const { return events_; }
    uint64_t commands() const { return commands_; }
    uint64_t data_ends() const { return data_ends_; }
    bool in_data() const { return in_data_; }
    std::string take_replies() { return std::exchange(replies_, {}); }
    const char* name() const { return reader_ == Reader::Postfix ? "Postfix-like" : "Exim-like"; }

private:
    void command_octet(char c) {
        if (c == '\n') {
            run_command();
            line_.clear();
            skipping_ = false;
            return;
        }
        if (reader_ == Reader::Postfix) {
            if (line_.size() < ctx_.limits.postfix)
                line_ += c;
            else
                skipping_ = true;   // skipped up to the LF, never a command of its own
            return;
        }
        if (line_.size() >= ctx_.limits.exim) {
            // Exim ends the command here, loses this octet and reads on as a new command.
            FUZZ_CHECK(false, std::string(name()) + " read a command line over " + std::to_string(ctx_.limits.exim) +
                                  " octets: its tail would be a command of its own: " + escaped(line_, 80) +
                                  ctx_.where() + " input " + escaped(ctx_.input));
        }
        line_ += c;
    }

    void run_command() {
        ++commands_;
        events_.push_back("C:" + line_.substr(0, 32));
        if (!skipping_) {
            FUZZ_CHECK(line_ == kBlocked || line_ == kOwnReset || ctx_.client_lines.count(line_) == 1,
                       std::string(name()) + " ran " + escaped(line_, 80) +
                           ", which the client never sent as a whole line" + ctx_.where() + " input " +
                           escaped(ctx_.input));
        }
        const std::string verb = verb_of(line_);
        for (const char* never : {"XCLIENT", "XFORWARD", "BDAT", "PROXY"}) {
            FUZZ_CHECK(verb != never, std::string(name()) + " ran " + escaped(line_, 80) + ctx_.where() +
                                          " input " + escaped(ctx_.input));
        }
        if (verb == "STARTTLS") {
            FUZZ_CHECK(!ctx_.options.strip_starttls && !ctx_.options.terminate_starttls,
                       std::string(name()) + " ran a STARTTLS the filter must keep from it" + ctx_.where() +
                           " input " + escaped(ctx_.input));
            replies_ += "454 4.7.0 TLS not available due to local problem\r\n";
        } else if (verb == "EHLO") {
            replies_ +=
                "250-mx.model.test\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PROTO HELO\r\n250-STARTTLS\r\n"
                "250-XFORWARD NAME ADDR\r\n250-CHUNKING\r\n250 8BITMIME\r\n";
        } else if (verb == "DATA" && !has_argument(line_)) {
            in_data_ = true;
            events_.push_back("D");
            replies_ += "354 End data with <CR><LF>.<CR><LF>\r\n";
        } else if (verb == "DATA") {
            replies_ += "501 5.5.4 Syntax: DATA\r\n";
        } else if (line_ == kBlocked) {
            replies_ += "502 5.5.2 Error: command not recognized\r\n";
        } else {
            replies_ += "250 2.0.0 Ok\r\n";
        }
    }

    void data_octet(char c) {
        // The filter's promise (SMTP smuggling): only CRLF line ends in DATA.
        if (c == '\n') {
            FUZZ_CHECK(prev_ == '\r', std::string("a bare LF reached the ") + name() + " backend in DATA" +
                                          ctx_.where() + " input " + escaped(ctx_.input));
        } else {
            FUZZ_CHECK(prev_ != '\r', std::string("a bare CR reached the ") + name() + " backend in DATA" +
                                          ctx_.where() + " input " + escaped(ctx_.input));
        }
        prev_ = c;
        if (c != '\n') {
            if (data_line_.size() < 4) data_line_ += c;
            return;
        }
        // Postfix's smtp_get() drops every CR before the LF, Exim one; both end the data
        // at a "." line.
        std::string text = data_line_;
        if (reader_ == Reader::Postfix) {
            while (!text.empty() && text.back() == '\r') text.pop_back();
        } else if (!text.empty() && text.back() == '\r') {
            text.pop_back();
        }
        data_line_.clear();
        if (text == ".") {
            in_data_ = false;
            ++data_ends_;
            events_.push_back("E");
            replies_ += "250 2.0.0 Ok: queued\r\n";
        }
        prev_ = 0;
    }

    Reader reader_;
    const Context& ctx_;
    std::string line_;
    bool skipping_ = false;
    bool in_data_ = false;
    std::string data_line_;   // the line's first octets: enough to tell a "." line
    char prev_ = 0;
    std::vector<std::string> events_;
    uint64_t commands_ = 0;
    uint64_t data_ends_ = 0;
    std::string replies_;
};

std::string expand(std::string_view in) {
    std::string out;
    for (size_t i = 0; i < in.size() && out.size() < kMaxExpanded; ++i) {
        if (static_cast<unsigned char>(in[i]) == 0xFF && i + 2 < in.size()) {
            const size_t n = (static_cast<unsigned char>(in[i + 1]) + 1) * 128;
            out.append(std::min(n, kMaxExpanded - out.size()), in[i + 2]);
            i += 2;
            continue;
        }
        out += in[i];
    }
    return out;
}

class Run {
public:
    Run(Context& ctx, std::string_view client)
        : ctx_(ctx), client_(client), filter_(ctx.options), postfix_(ModelBackend::Reader::Postfix, ctx),
          exim_(ModelBackend::Reader::Exim, ctx), rnd_(ctx.input) {}

    void go() {
        size_t pos = 0;
        while (pos < client_.size() && !filter_.abandon_backend()) {
            if (tls_started_) {
                // The client's TLS stream starts afresh: the plain text it pipelined after
                // STARTTLS was dropped by the filter, up to the end of the line it was in.
                tls_started_ = false;
                if (pos > 0 && client_[pos - 1] != '\n') {
                    const size_t lf = client_.find('\n', pos);
                    pos = lf == std::string_view::npos ? client_.size() : lf + 1;
                    continue;
                }
            }
            const size_t cap = rnd_.below(4) == 0 ? client_.size() - pos : std::min<size_t>(client_.size() - pos, 64);
            const size_t n = 1 + rnd_.below(cap);
            std::string to_backend, to_client;
            filter_.from_client(client_.substr(pos, n), to_backend, to_client);
            pos += n;
            after_filter(to_backend, to_client);
            if (rnd_.below(2) == 0) replies(rnd_.below(3) == 0 ? SIZE_MAX : 1 + rnd_.below(200));
        }
        // Every reply owed, until nothing moves.
        for (int rounds = 0; rounds < 100000 && !pending_.empty() && !filter_.abandon_backend(); ++rounds)
            replies(SIZE_MAX);
        FUZZ_CHECK(postfix_.in_data() == exim_.in_data(), "the backends disagree on being in DATA at the end" +
                                                              ctx_.where() + " input " + escaped(ctx_.input));
    }

private:
    // Backend output (the Postfix-like one's) into the filter, `budget` octets of it in
    // pieces.
    void replies(size_t budget) {
        while (budget > 0 && !pending_.empty() && !filter_.abandon_backend()) {
            const size_t n = std::min({budget, pending_.size(), 1 + rnd_.below(rnd_.below(2) ? 8 : 512)});
            std::string piece = pending_.substr(0, n);
            pending_.erase(0, n);
            budget -= n;
            std::string to_backend, to_client;
            filter_.from_backend(piece, to_client, to_backend);
            after_filter(to_backend, to_client);
        }
    }

    void after_filter(const std::string& to_backend, const std::string& to_client) {
        if (!filter_.abandon_backend()) {
            postfix_.feed(to_backend);
            exim_.feed(to_backend);
        }
        pending_ += postfix_.take_replies();
        exim_.take_replies();
        for (const char* hidden : {"XCLIENT", "XFORWARD", "CHUNKING"}) {
            FUZZ_CHECK(to_client.find(hidden) == std::string::npos,
                       "the client was shown " + std::string(hidden) + ": " + escaped(to_client) + ctx_.where() +
                           " input " + escaped(ctx_.input));
        }
        // The client's TLS handshake, done at once; the filter's RSET goes to the backends.
        if (filter_.start_tls_now()) {
            std::string reset, stashed;
            filter_.tls_established(stashed, reset);
            tls_started_ = true;
            FUZZ_CHECK(reset == "RSET\r\n", "after the handshake the filter sent " + escaped(reset) +
                                                 " to the backend, not RSET" + ctx_.where());
            return after_filter(reset, stashed);
        }

        // Only the events since the last comparison: the older ones were equal.
        const auto& pe = postfix_.events();
        const auto& ee = exim_.events();
        FUZZ_CHECK(pe.size() == ee.size() && std::equal(pe.begin() + static_cast<ptrdiff_t>(compared_), pe.end(),
                                                        ee.begin() + static_cast<ptrdiff_t>(compared_)),
                   "the backends disagree: Postfix-like has " + std::to_string(pe.size()) + " events, Exim-like " +
                       std::to_string(ee.size()) + "; last " + escaped(pe.empty() ? "" : pe.back()) + " vs " +
                       escaped(ee.empty() ? "" : ee.back()) + ctx_.where() + " input " + escaped(ctx_.input));
        compared_ = pe.size();
        if (filter_.abandon_backend()) return;   // the session closes the backend now
        for (const ModelBackend* b : {&postfix_, &exim_}) {
            FUZZ_CHECK(b->commands() == filter_.commands_sent(),
                       std::string(b->name()) + " ran " + std::to_string(b->commands()) +
                           " commands, the filter forwarded " + std::to_string(filter_.commands_sent()) +
                           ctx_.where() + " input " + escaped(ctx_.input));
            FUZZ_CHECK(b->data_ends() == filter_.messages_sent(),
                       std::string(b->name()) + " saw " + std::to_string(b->data_ends()) +
                           " ends of data, the filter forwarded " + std::to_string(filter_.messages_sent()) +
                           ctx_.where() + " input " + escaped(ctx_.input));
        }
        if (!filter_.client_held()) {
            FUZZ_CHECK(filter_.held_bytes() <= ctx_.limits.filter + 1,
                       "the filter keeps " + std::to_string(filter_.held_bytes()) + " bytes while not holding" +
                           ctx_.where());
        }
    }

    Context& ctx_;
    std::string_view client_;
    RelayFilter filter_;
    ModelBackend postfix_;
    ModelBackend exim_;
    fuzz::InputRandom rnd_;
    std::string pending_;   // backend output not yet given to the filter
    size_t compared_ = 0;   // events known equal in both backends
    bool tls_started_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const uint8_t mode = data[0];

    Context ctx;
    ctx.input = in;
    ctx.options.bare_lf = (mode & 1) ? BareLf::Normalize : BareLf::Reject;
    switch ((mode >> 1) & 3) {
    case 0: break;
    case 1: ctx.options.strip_starttls = true; break;
    case 2: ctx.options.terminate_starttls = true; break;
    case 3:
        ctx.options.terminate_starttls = true;
        ctx.options.tls_already_active = true;
        break;
    }
    ctx.limits = (mode & 8) ? kSmall : kProduction;
    ctx.options.in_transaction = (mode & 16) != 0;
    ctx.options.max_command_line = ctx.limits.filter;
    ctx.options.max_mode_line = ctx.limits.mode;

    const std::string client = expand(in.substr(1));
    for (size_t start = 0; start < client.size();) {
        const size_t lf = client.find('\n', start);
        if (lf == std::string::npos) break;
        ctx.client_lines.insert(std::string_view(client).substr(start, lf - start));
        start = lf + 1;
    }
    Run(ctx, client).go();
    return 0;
}
