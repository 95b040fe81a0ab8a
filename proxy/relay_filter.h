#pragma once
// The relay between a handed-off client and the backend MTA (SPEC §2 step 8, §4).
//
// With backend.handoff = xclient the backend trusts *our* address for XCLIENT (Postfix
// smtpd_authorized_xclient_hosts): a client that got "XCLIENT ADDR=127.0.0.1" through
// the relay would turn itself into a trusted relay client. So for as long as the session
// is in clear text the relay follows the SMTP dialogue in both directions, tells command
// lines apart from message content by the backend's own replies, and neutralizes the
// commands a client may never send through us.
//
// Pure: bytes in, bytes out; no I/O, no clock, no global state.
//
// WARNING for the caller: with strip_starttls = false a client's STARTTLS reaches the
// backend and, once it answers 220, everything is encrypted end to end and this filter
// can no longer see (or block) an XCLIENT inside the TLS stream. With backend.handoff =
// xclient (or none) the caller must therefore set strip_starttls = true.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace smtpscreen {

class RelayFilter {
public:
    struct Options {
        bool strip_starttls = false;   // remove STARTTLS from EHLO replies and block the client's STARTTLS
        size_t max_line = 4096;        // longest command/reply line kept whole; longer lines are still
                                       // forwarded (values below 64 are raised to 64)
    };

    explicit RelayFilter(Options options);

    // Client -> backend bytes. Appends what to forward to `to_backend`.
    void from_client(std::string_view in, std::string& to_backend);
    // Backend -> client bytes. Appends to `to_client`; bytes of the client that were held
    // (see client_held) and are now released are appended to `to_backend`.
    void from_backend(std::string_view in, std::string& to_client, std::string& to_backend);

    // True while a forwarded DATA (or STARTTLS) awaits the backend's reply: the caller should
    // stop reading the client (back-pressure); bytes already given to from_client are kept
    // and released by from_backend. Bytes held behind a STARTTLS that the backend accepts
    // are discarded, not released (CVE-2011-0411 class, SPEC §3).
    bool client_held() const { return phase_ == Phase::Held; }
    // After a STARTTLS that the backend answered 220 (only when !strip_starttls): everything
    // is encrypted now, the filter passes bytes untouched both ways.
    bool transparent() const { return phase_ == Phase::Transparent; }
    // Client bytes kept inside the filter and not yet forwarded: the held bytes plus an
    // unfinished command line (at most max_line).
    size_t held_bytes() const { return held_.size() + line_.size(); }

private:
    enum class Phase : uint8_t { Command, Held, Data, Transparent };
    // What a forwarded command needs from its reply.
    enum class Awaits : uint8_t { Other, Ehlo, Data, StartTls };
    enum class Verb : uint8_t { Other, Ehlo, Data, StartTls, Blocked };
    // The tail of a line longer than max_line: streamed on, or dropped.
    enum class LongLine : uint8_t { None, Forward, Drop };
    enum class DataScan : uint8_t { LineStart, InLine, Cr, Dot, DotCr };

    // Client side.
    size_t command_bytes(std::string_view in, std::string& to_backend);
    void begin_long_command(std::string& to_backend);
    Awaits forward_command(std::string_view line, std::string& to_backend) const;
    void command_forwarded(Awaits awaits);
    Verb classify(std::string_view line) const;
    std::optional<size_t> end_of_data(std::string_view in);
    void release_held(std::string& to_backend);

    // Backend side.
    void start_reply();
    void ehlo_reply_bytes(std::string_view segment, bool line_ends, bool final, std::string& to_client);
    void ehlo_line_complete(bool final, std::string& to_client);
    void begin_long_ehlo_line(std::string& to_client);
    void close_stripped_ehlo_reply(std::string& to_client);
    bool strip_ehlo_line(std::string_view line) const;
    void reply_complete(std::string_view code, std::string& to_backend);

    Options options_;
    Phase phase_ = Phase::Command;

    // Client side state.
    std::string line_;                           // unfinished command line, at most max_line
    LongLine long_command_ = LongLine::None;
    Awaits long_command_awaits_ = Awaits::Other;
    std::string held_;                           // client bytes behind a DATA/STARTTLS
    DataScan data_scan_ = DataScan::LineStart;
    // One entry per command line forwarded and not yet answered, in order (RFC 2920: the
    // backend answers a pipelined group in order). AUTH keeps the count too: each 334
    // challenge answers one line and each client response line gets one reply. Bounded
    // by what the sockets let through.
    std::deque<Awaits> awaiting_;

    // Backend side state: the reply in progress.
    bool in_reply_ = false;
    bool reply_counted_ = false;                 // answers an entry of awaiting_ (not unsolicited)
    Awaits reply_awaits_ = Awaits::Other;
    std::string reply_head_;                     // first 4 bytes of the current line: code, separator
    std::string ehlo_line_;                      // current EHLO reply line, at most max_line
    std::string ehlo_pending_;                   // last kept EHLO line, not yet sent (it may become final)
    bool ehlo_first_line_ = true;
    LongLine long_reply_ = LongLine::None;
};

}  // namespace smtpscreen
