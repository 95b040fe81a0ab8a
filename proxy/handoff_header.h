#pragma once
// What the backend is told about the real client: PROXY v1/v2 headers (haproxy's
// proxy-protocol.txt) and XCLIENT (Postfix XCLIENT_README). Pure functions over bytes;
// the same parser reads the PROXY header a load balancer sends us.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "core/address.h"

namespace smtpscreen {

// backend.handoff: how the backend learns the client's address.
enum class Handoff { ProxyV2, ProxyV1, Xclient, None };
inline constexpr std::array<std::pair<std::string_view, Handoff>, 4> kHandoffNames{{
    {"proxy-v2", Handoff::ProxyV2}, {"proxy-v1", Handoff::ProxyV1}, {"xclient", Handoff::Xclient},
    {"none", Handoff::None}}};

// listen.proxy_protocol: the PROXY header a load balancer in front sends us.
enum class ProxyProtocol { Off, V1, V2, Auto };
inline constexpr std::array<std::pair<std::string_view, ProxyProtocol>, 4> kProxyProtocolNames{{
    {"off", ProxyProtocol::Off}, {"v1", ProxyProtocol::V1}, {"v2", ProxyProtocol::V2},
    {"auto", ProxyProtocol::Auto}}};

std::string encode_proxy_v1(const Endpoint& client, const Endpoint& local);
std::string encode_proxy_v2(const Endpoint& client, const Endpoint& local);

struct ProxyHeader {
    enum class Status { NeedMore, Invalid, Done };
    Status status = Status::NeedMore;
    size_t consumed = 0;    // bytes of the header, when Done
    bool local = false;     // v2 LOCAL command or v1 "UNKNOWN": keep the connection's own addresses
    Endpoint source;
    Endpoint destination;
    std::string error;      // for Invalid: what was wrong
};

// Longest header the parser accepts: v1 lines are at most 107 octets with CRLF
// (proxy-protocol.txt §2.1); v2 headers, TLVs included, at most this many. A reader can
// size its accept-stage buffer with it: more than this without Done is always Invalid.
constexpr size_t kProxyV1MaxLength = 107;
constexpr size_t kProxyHeaderMaxLength = 2048;

// mode is V1, V2 or Auto (either); Off is a programming error (reported as Invalid).
ProxyHeader parse_proxy_header(std::string_view buffered, ProxyProtocol mode);

// RFC 3461 xtext as XCLIENT requires: '+', '=', controls and non-ASCII become +XX.
std::string xtext_encode(std::string_view text);

struct XclientAttributes {
    Endpoint client;
    std::string name;   // verified reverse name, or "[UNAVAILABLE]"
    std::string helo;   // empty: not sent
    std::string proto;  // "SMTP"/"ESMTP", empty: not sent
};
// "XCLIENT ADDR=1.2.3.4 PORT=1234 NAME=... [HELO=...] [PROTO=...]\r\n"; IPv6 as ADDR=IPV6:...
std::string encode_xclient(const XclientAttributes& attrs);

}  // namespace smtpscreen
