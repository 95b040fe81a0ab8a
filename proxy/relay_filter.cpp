#include "proxy/relay_filter.h"

#include <algorithm>

namespace smtpscreen {

namespace {

// Reply and command lines are judged by their first octets; below this a verb or keyword
// could be cut off.
constexpr size_t kMinLine = 64;

CommandPairing::Options pairing_options(const RelayFilter::Options& o) {
    CommandPairing::Options p;
    p.strip_starttls = o.strip_starttls;
    p.terminate_starttls = o.terminate_starttls;
    p.tls_already_active = o.tls_already_active;
    p.in_transaction = o.in_transaction;
    p.max_line = o.max_command_line;
    p.max_mode_line = o.max_mode_line;
    p.take_tls_slot = o.take_tls_slot;
    return p;
}

EhloRewriter::Options ehlo_options(const RelayFilter::Options& o) {
    EhloRewriter::Options e;
    // Stripped when the client's STARTTLS is blocked, or when ours replaces it.
    e.strip_starttls = o.strip_starttls || o.terminate_starttls;
    e.max_line = o.max_line;
    return e;
}

}  // namespace

RelayFilter::RelayFilter(Options options)
    : options_(options),
      pairing_(pairing_options(options)),
      scanner_(SmugglingScanner::Options{options.bare_lf, options.max_text_line}),
      ehlo_(ehlo_options(options)) {
    options_.max_line = std::max(options_.max_line, kMinLine);
}

void RelayFilter::from_client(std::string_view in, std::string& to_backend, std::string& to_client) {
    using Phase = CommandPairing::Phase;
    if (!backend_stash_.empty() && pairing_.phase() == Phase::Command) flush_backend_stash(to_client, to_backend);
    while (!in.empty()) {
        switch (pairing_.phase()) {
        case Phase::Transparent:
            to_backend.append(in);
            return;
        case Phase::Held:
            pairing_.hold(in);
            return;
        case Phase::Refused:
            return;
        case Phase::TlsWaiting:
            // Discarded if our 220 follows, commands again if we refuse the STARTTLS.
            pairing_.hold(in);
            return;
        case Phase::TlsStarting:
            pairing_.discard_after_starttls(in.size());
            return;
        case Phase::Data: {
            std::optional<size_t> end = scanner_.scan(in, to_backend);
            if (!end) return;
            in.remove_prefix(*end);
            if (scanner_.refusal() != Refusal::None) {
                // No reply from the backend is owed: the client had to wait for the 354,
                // which answered its last command. Whatever it sent after its end of data
                // is never read (abandon_backend()).
                pairing_.message_refused();
                to_client.append(refusal_replies(scanner_.refusal()));
                return;
            }
            pairing_.message_ended();
            break;
        }
        case Phase::Command:
            in.remove_prefix(pairing_.command_bytes(in, to_backend, to_client));
            break;
        }
    }
}

void RelayFilter::from_backend(std::string_view in, std::string& to_client, std::string& to_backend) {
    using Phase = CommandPairing::Phase;
    if (!backend_stash_.empty() && pairing_.phase() != Phase::TlsStarting) flush_backend_stash(to_client, to_backend);
    while (!in.empty()) {
        // A refused message leaves nothing the backend says owed to the client.
        if (pairing_.phase() == Phase::Refused) return;
        if (pairing_.phase() == Phase::TlsStarting) {
            // Our 220 was the last plain text for the client, and nothing is owed: only an
            // unsolicited reply (a 421 before closing) can come. It waits for the TLS
            // session; a backend that says more than a line meanwhile loses the rest.
            size_t room = options_.max_line - std::min(options_.max_line, backend_stash_.size());
            backend_stash_.append(in.substr(0, room));
            return;
        }
        if (pairing_.phase() == Phase::Transparent) {
            to_client.append(in);
            return;
        }
        size_t lf = in.find('\n');
        std::string_view segment = in.substr(0, lf == std::string_view::npos ? in.size() : lf + 1);
        in.remove_prefix(segment.size());

        CommandPairing::ReplyPiece piece = pairing_.reply_piece(segment);
        if (piece.ours) {
            // The reply to our RSET after the handshake: the client never asked.
        } else if (piece.answers_ehlo) {
            if (piece.starts_reply) ehlo_.begin(options_.terminate_starttls && !pairing_.tls_active());
            ehlo_.bytes(segment, piece.head, piece.line_ends, piece.final, to_client);
        } else {
            // Every other reply streams through untouched: only its code matters.
            to_client.append(segment);
        }
        if (piece.line_ends) after_reply_line(pairing_.line_complete(to_client), to_client, to_backend);
    }
}

void RelayFilter::after_reply_line(CommandPairing::Completed done, std::string& to_client, std::string& to_backend) {
    if (done.data_begins) scanner_.begin();
    if (done.release_held) {
        std::string held = pairing_.take_held();
        from_client(held, to_backend, to_client);
    }
}

void RelayFilter::tls_established(std::string& to_client, std::string& to_backend) {
    if (!start_tls_now()) return;
    pairing_.tls_established();
    // What the backend said during the handshake was unsolicited: it goes out before the
    // RSET is owed a reply, so it is never taken for that reply.
    flush_backend_stash(to_client, to_backend);
    pairing_.reset_backend(to_backend);
}

void RelayFilter::flush_backend_stash(std::string& to_client, std::string& to_backend) {
    std::string stash;
    stash.swap(backend_stash_);
    from_backend(stash, to_client, to_backend);
}

}  // namespace smtpscreen
