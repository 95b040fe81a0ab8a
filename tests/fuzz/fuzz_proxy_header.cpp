// Fuzz target: proxy/handoff_header.h. The input is what a load balancer (or anyone who
// reaches a PROXY listener) sends first. It is parsed as V1, V2 and Auto; the results
// must be consistent with each other and with the parse of shorter prefixes (the
// accept stage calls the parser again as bytes arrive, so a header may never be
// refused or accepted differently depending on how it was cut), and a parsed header
// re-encoded with encode_proxy_v1/v2 must parse back to the same addresses.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/handoff_header.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;
using Status = ProxyHeader::Status;

namespace {

const char* mode_name(ProxyProtocol m) {
    switch (m) {
        case ProxyProtocol::V1:
            return "V1";
        case ProxyProtocol::V2:
            return "V2";
        case ProxyProtocol::Auto:
            return "Auto";
        case ProxyProtocol::Off:
            break;
    }
    return "Off";
}

const char* status_name(Status s) {
    switch (s) {
        case Status::NeedMore:
            return "NeedMore";
        case Status::Invalid:
            return "Invalid";
        case Status::Done:
            return "Done";
    }
    return "?";
}

std::string describe(const ProxyHeader& h) {
    std::string out = status_name(h.status);
    if (h.status == Status::Done) {
        out += " consumed=" + std::to_string(h.consumed);
        out += h.local ? " local" : " " + h.source.to_string() + " -> " + h.destination.to_string();
    }
    if (h.status == Status::Invalid) out += " (" + h.error + ")";
    return out;
}

bool same(const ProxyHeader& a, const ProxyHeader& b) {
    if (a.status != b.status) return false;
    if (a.status != Status::Done) return true;
    return a.consumed == b.consumed && a.local == b.local && a.source == b.source && a.destination == b.destination;
}

// What holds for any single result.
void check_alone(const ProxyHeader& h, std::string_view in, ProxyProtocol mode) {
    // Built only when a check fails: it is most of the cost otherwise.
    const auto where = [&] { return std::string(" (") + mode_name(mode) + ", input " + escaped(in) + ")"; };
    switch (h.status) {
        case Status::Done:
            FUZZ_CHECK(h.consumed > 0 && h.consumed <= in.size(), "consumed " + std::to_string(h.consumed) + where());
            FUZZ_CHECK(h.consumed <= kProxyHeaderMaxLength, "header longer than kProxyHeaderMaxLength" + where());
            if (!h.local) {
                FUZZ_CHECK(h.source.valid() && h.destination.valid(), "Done without addresses" + where());
            }
            break;
        case Status::Invalid:
            FUZZ_CHECK(!h.error.empty(), "Invalid without a reason" + where());
            break;
        case Status::NeedMore:
            // handoff_header.h: more than these without Done is always Invalid, so the
            // accept stage can bound its buffer by them.
            FUZZ_CHECK(in.size() < kProxyHeaderMaxLength,
                       "NeedMore after " + std::to_string(in.size()) + " bytes" + where());
            if (mode == ProxyProtocol::V1) {
                FUZZ_CHECK(in.size() < kProxyV1MaxLength,
                           "V1 NeedMore after " + std::to_string(in.size()) + " bytes" + where());
            }
            break;
    }
}

// The parse of a prefix must not contradict the parse of the whole.
void check_prefix(std::string_view in, size_t k, const ProxyHeader& whole, ProxyProtocol mode) {
    const ProxyHeader part = parse_proxy_header(in.substr(0, k), mode);
    check_alone(part, in.substr(0, k), mode);
    // Built only when a check fails: it is most of the cost otherwise.
    const auto where = [&] {
        return std::string(" (") + mode_name(mode) + ", prefix of " + std::to_string(k) + " is " + describe(part) +
               ", whole is " + describe(whole) + ", input " + escaped(in) + ")";
    };
    if (part.status == Status::Invalid) FUZZ_CHECK(whole.status == Status::Invalid, "refused too early" + where());
    if (part.status == Status::Done) FUZZ_CHECK(same(part, whole), "accepted differently" + where());
    if (whole.status == Status::Done && k < whole.consumed) {
        FUZZ_CHECK(part.status == Status::NeedMore, "a prefix of a complete header is not NeedMore" + where());
    }
}

void check_round_trip(const ProxyHeader& h, std::string_view in) {
    if (h.local) {
        // Without addresses, v1 says UNKNOWN; v2 would say UNSPEC, which we refuse.
        const std::string v1 = encode_proxy_v1(Endpoint{}, Endpoint{});
        const ProxyHeader back = parse_proxy_header(v1, ProxyProtocol::V1);
        FUZZ_CHECK(back.status == Status::Done && back.local && back.consumed == v1.size(),
                   "UNKNOWN: " + describe(back));
        return;
    }
    const std::string from = " from " + describe(h) + " of " + escaped(in);
    const std::string v1 = encode_proxy_v1(h.source, h.destination);
    const std::string v2 = encode_proxy_v2(h.source, h.destination);
    FUZZ_CHECK(v1.size() <= kProxyV1MaxLength, "encode_proxy_v1 wrote " + escaped(v1) + from);
    for (auto mode : {ProxyProtocol::V1, ProxyProtocol::Auto}) {
        const ProxyHeader back = parse_proxy_header(v1 + "EHLO x\r\n", mode);
        FUZZ_CHECK(back.status == Status::Done && !back.local && back.consumed == v1.size() &&
                       back.source == h.source && back.destination == h.destination,
                   std::string(mode_name(mode)) + " re-parse of " + escaped(v1) + " gave " + describe(back) + from);
    }
    for (auto mode : {ProxyProtocol::V2, ProxyProtocol::Auto}) {
        const ProxyHeader back = parse_proxy_header(v2 + "EHLO x\r\n", mode);
        FUZZ_CHECK(back.status == Status::Done && !back.local && back.consumed == v2.size() &&
                       back.source == h.source && back.destination == h.destination,
                   std::string(mode_name(mode)) + " re-parse of " + escaped(v2) + " gave " + describe(back) + from);
    }
}

// XCLIENT carries client-chosen text (the HELO name) to the backend: whatever it is,
// the command must stay one line of printable ASCII within 512 octets.
void check_xclient(const Endpoint& client, std::string_view text) {
    XclientAttributes attrs;
    attrs.client = client;
    attrs.name = std::string(text.substr(0, text.size() / 3));
    attrs.helo = std::string(text);
    attrs.proto = "ESMTP";
    const std::string line = encode_xclient(attrs);
    FUZZ_CHECK(line.size() <= 512, "XCLIENT line of " + std::to_string(line.size()) + " octets");
    FUZZ_CHECK(line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0, "XCLIENT line without CRLF");
    for (size_t i = 0; i + 2 < line.size(); ++i) {
        const auto c = static_cast<unsigned char>(line[i]);
        FUZZ_CHECK(c >= 0x20 && c < 0x7f, "XCLIENT line with byte " + std::to_string(c) + ": " + escaped(line));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    fuzz::InputRandom rnd(in);

    ProxyHeader by_mode[3];
    const ProxyProtocol modes[3] = {ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Auto};
    for (int i = 0; i < 3; ++i) {
        const ProxyProtocol mode = modes[i];
        const ProxyHeader& h = by_mode[i] = parse_proxy_header(in, mode);
        check_alone(h, in, mode);
        if (!in.empty()) {
            check_prefix(in, in.size() - 1, h, mode);
            check_prefix(in, rnd.below(in.size()), h, mode);
        }
        if (h.status == Status::Done) {
            check_prefix(in, h.consumed - 1, h, mode);
            // Bytes after the header (the client's first SMTP bytes) change nothing.
            const ProxyHeader exact = parse_proxy_header(in.substr(0, h.consumed), mode);
            FUZZ_CHECK(same(exact, h), std::string(mode_name(mode)) + ": the header alone gives " + describe(exact) +
                                           ", with what follows " + describe(h) + ", input " + escaped(in));
            check_round_trip(h, in);
        }
    }

    // Auto only looks at the first byte to choose; it never accepts what the chosen
    // version refuses.
    const ProxyHeader& v1 = by_mode[0];
    const ProxyHeader& v2 = by_mode[1];
    const ProxyHeader& automatic = by_mode[2];
    if (!in.empty() && in[0] == 'P') {
        FUZZ_CHECK(same(automatic, v1), "Auto " + describe(automatic) + " but V1 " + describe(v1) + ", " + escaped(in));
    } else if (!in.empty() && in[0] == '\r') {
        FUZZ_CHECK(same(automatic, v2), "Auto " + describe(automatic) + " but V2 " + describe(v2) + ", " + escaped(in));
    } else if (!in.empty()) {
        FUZZ_CHECK(automatic.status == Status::Invalid, "Auto accepted " + escaped(in));
    }
    FUZZ_CHECK(!(v1.status == Status::Done && v2.status == Status::Done), "both V1 and V2 accept " + escaped(in));

    const ProxyHeader off = parse_proxy_header(in, ProxyProtocol::Off);
    FUZZ_CHECK(off.status == Status::Invalid, "mode Off gave " + describe(off));

    Endpoint client = *Endpoint::parse("192.0.2.1:2525");
    for (const auto& h : by_mode) {
        if (h.status == Status::Done && !h.local) client = h.source;
    }
    check_xclient(client, in);
    return 0;
}
