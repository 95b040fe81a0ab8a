#pragma once
// The DNS wire format (RFC 1035 §4.1) for the questions the DNS client asks and the
// replies it reads: pure functions over bytes, no I/O. c-ares only carries the bytes
// (sends, retransmits, matches the reply's id and question); every byte of a reply that
// smtpscreen acts on is read here, and a reply that breaks the format is refused whole
// with a reason instead of being half used.
//
// Names are in presentation form without the final dot ("2.0.0.127.zen.example"; the
// root is "."), with the case they had on the wire: a '.' or '\' inside a label is
// escaped with a backslash, and a byte outside '!'..'~' is written \DDD (RFC 1035 §5.1),
// so that a label holding a dot can never pass for two labels.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace smtpscreen::dns {

constexpr uint16_t kTypeA = 1;
constexpr uint16_t kTypeNs = 2;
constexpr uint16_t kTypeCname = 5;
constexpr uint16_t kTypeSoa = 6;
constexpr uint16_t kTypePtr = 12;
constexpr uint16_t kTypeAaaa = 28;
constexpr uint16_t kClassIn = 1;

constexpr uint8_t kRcodeNoError = 0;
constexpr uint8_t kRcodeNxDomain = 3;

// RFC 1035 §2.3.4: a name is at most 255 octets on the wire, a label at most 63.
constexpr std::size_t kMaxNameOctets = 255;
constexpr std::size_t kMaxLabelOctets = 63;
// CNAMEs followed from the question to the records that answer it. RFC 1034 §3.6.2
// expects one; RFC 2317 classless reverse delegation uses one more.
constexpr int kMaxCnameHops = 8;

struct Question {
    std::string name;
    uint16_t type = 0;
    uint16_t qclass = kClassIn;
};

struct Record {
    std::string owner;
    uint16_t type = 0;
    uint16_t rclass = 0;
    uint32_t ttl = 0;          // seconds; a TTL with the top bit set reads as 0 (RFC 2181 §8)
    std::string rdata;         // the RDATA as sent; A: 4 bytes, AAAA: 16, network order
    std::string target;        // CNAME, PTR and NS (class IN): the name in the RDATA
    uint32_t soa_minimum = 0;  // SOA (class IN): its MINIMUM field
};

struct Message {
    uint16_t id = 0;
    bool response = false;
    uint8_t opcode = 0;
    bool authoritative = false;
    bool truncated = false;  // TC: the server cut the reply short (RFC 2181 §9)
    bool recursion_desired = false;
    bool recursion_available = false;
    uint8_t rcode = 0;
    std::vector<Question> questions;
    std::vector<Record> answers;
    std::vector<Record> authority;
    // The additional section is not read: nothing in it is used, and with no EDNS
    // asked for there is no OPT record to find there.
    std::size_t size = 0;  // bytes read: the header, the questions, answers and authority
};

// A standard query (opcode 0, RD set, no EDNS) for one name, type and class IN, in wire
// form; nullopt with *error set when `name` cannot be one: an empty label, a label over
// 63 octets, a name over 255, or a bad escape. Takes the presentation form that
// parse_message produces, with or without a final dot.
std::optional<std::string> build_query(uint16_t id, std::string_view name, uint16_t type, std::string* error);

// Reads a whole message; nullopt with *error set (what is wrong and where, e.g.
// "answer 2 of 3: the RDATA runs past the end of the message") when it breaks the
// format: cut short, a count larger than the records present, a compression pointer that
// does not point back to an earlier name (which also rules out loops), a name over 255
// octets, an A or AAAA record of the wrong size, a name in RDATA that does not fill it.
std::optional<Message> parse_message(std::span<const unsigned char> wire, std::string* error);

// Why `reply` is not the answer to `asked` (sent with `id`, when the caller knows the id
// that went out), or empty when it is: it must be a response to a standard query
// (opcode 0) with exactly that question; names compare without regard to ASCII case.
std::string mismatch(const Message& reply, const Question& asked, std::optional<uint16_t> id);

// ASCII case-insensitive equality of two names (RFC 4343).
bool same_name(std::string_view a, std::string_view b);

// "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", else "rcode N".
std::string rcode_name(uint8_t rcode);

// The class IN records of `type` in the answer section that answer the question: owned
// by the question's name or, failing that, by the end of a chain of CNAMEs from it (at
// most kMaxCnameHops), in answer order; with the smallest TTL of those records and of
// the CNAMEs followed (0 when there are none).
struct Answers {
    std::vector<const Record*> records;
    uint32_t ttl = 0;
};
Answers answers_to_question(const Message& reply, uint16_t type);

// For an NXDOMAIN or an empty answer: how long it may be cached, min(SOA TTL, SOA
// MINIMUM) of the first SOA record in the authority section (RFC 2308 §5), else 0.
uint32_t negative_ttl(const Message& reply);

}  // namespace smtpscreen::dns
