#include "dnsbl/dns_message.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "core/text.h"

namespace smtpscreen::dns {

namespace {

constexpr std::size_t kHeaderSize = 12;
constexpr std::size_t kRecordFixedSize = 10;  // type, class, TTL, RDLENGTH
constexpr std::size_t kSoaFixedSize = 20;     // serial, refresh, retry, expire, minimum

// Thrown inside the parser only, caught by parse_message: each step says what it found
// wrong and the caller adds where.
struct Malformed {
    std::string what;
};

void append_escaped(std::string& out, unsigned char c) {
    if (c == '.' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
    } else if (c >= '!' && c <= '~') {
        out += static_cast<char>(c);
    } else {
        out += fmt::format("\\{:03d}", c);
    }
}

class Reader {
public:
    explicit Reader(std::span<const unsigned char> wire) : wire_(wire) {}

    std::size_t pos() const { return pos_; }
    void seek(std::size_t pos) { pos_ = pos; }

    void need(std::size_t n, std::size_t end, const char* what) const {
        if (end - pos_ < n) throw past_end(what, end);
    }
    uint16_t u16() {
        const uint16_t v = static_cast<uint16_t>(wire_[pos_] << 8 | wire_[pos_ + 1]);
        pos_ += 2;
        return v;
    }
    uint32_t u32() {
        const uint32_t hi = u16();
        return hi << 16 | u16();
    }

    // A name at the current position whose own bytes end by `end` (the message, or the
    // RDATA it is in). A compression pointer must point before the start of the labels
    // it follows, and the labels it leads to must end before that start too (RFC 1035
    // §4.1.4: "a prior occurrence of the same name"): the places a name is read from
    // only move back, so no pointer can lead into a loop, and a name is made of bytes
    // that come before it, never of bytes after the record it is in.
    std::string name(std::size_t end) {
        std::string out;
        std::size_t octets = 1;  // the root label's length octet
        std::size_t cursor = pos_;
        std::size_t run_start = pos_;
        bool jumped = false;
        for (;;) {
            if (cursor >= end) throw jumped ? runs_into_pointer(cursor) : past_end("a name", end);
            const unsigned char len = wire_[cursor];
            if ((len & 0xC0) == 0xC0) {
                if (end - cursor < 2) {
                    throw jumped ? runs_into_pointer(cursor) : Malformed{"a compression pointer is cut short"};
                }
                const std::size_t target = static_cast<std::size_t>(len & 0x3F) << 8 | wire_[cursor + 1];
                if (target >= run_start) {
                    throw Malformed{
                        fmt::format("a compression pointer at offset {} points to {}, not back to an earlier name",
                                    cursor, target)};
                }
                if (!jumped) pos_ = cursor + 2;
                jumped = true;
                end = run_start;
                cursor = run_start = target;
                continue;
            }
            if (len & 0xC0) {
                throw Malformed{fmt::format("a label of type {:#04x} (only plain labels and pointers exist)", len & 0xC0)};
            }
            if (len == 0) {
                if (!jumped) pos_ = cursor + 1;
                return out.empty() ? std::string(".") : out;
            }
            octets += 1 + len;
            if (octets > kMaxNameOctets) throw Malformed{"a name is longer than 255 octets"};
            if (end - cursor - 1 < len) throw jumped ? runs_into_pointer(cursor) : past_end("a name", end);
            if (!out.empty()) out += '.';
            for (std::size_t i = cursor + 1; i <= cursor + len; ++i) append_escaped(out, wire_[i]);
            cursor += 1 + len;
        }
    }

    std::string bytes(std::size_t n) {
        std::string out(reinterpret_cast<const char*>(wire_.data() + pos_), n);
        pos_ += n;
        return out;
    }

private:
    static Malformed runs_into_pointer(std::size_t offset) {
        return Malformed{fmt::format("the labels at offset {}, reached by a compression pointer, run past the "
                                     "name that points to them",
                                     offset)};
    }
    Malformed past_end(const char* what, std::size_t end) const {
        return Malformed{fmt::format("{} runs past the end of the {}", what, end == wire_.size() ? "message" : "RDATA")};
    }

    std::span<const unsigned char> wire_;
    std::size_t pos_ = 0;
};

Question read_question(Reader& r, std::size_t end) {
    Question q;
    q.name = r.name(end);
    r.need(4, end, "the question's type and class");
    q.type = r.u16();
    q.qclass = r.u16();
    return q;
}

Record read_record(Reader& r, std::size_t end) {
    Record rec;
    rec.owner = r.name(end);
    r.need(kRecordFixedSize, end, "the record's type, class, TTL and length");
    rec.type = r.u16();
    rec.rclass = r.u16();
    rec.ttl = r.u32();
    if (rec.ttl > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) rec.ttl = 0;
    const std::size_t rdlength = r.u16();
    r.need(rdlength, end, "the RDATA");
    const std::size_t rdata_start = r.pos();
    const std::size_t rdata_end = rdata_start + rdlength;
    rec.rdata = r.bytes(rdlength);
    if (rec.rclass != kClassIn) return rec;

    r.seek(rdata_start);
    switch (rec.type) {
        case kTypeA:
        case kTypeAaaa: {
            const std::size_t size = rec.type == kTypeA ? 4 : 16;
            if (rdlength != size) {
                throw Malformed{fmt::format("an {} record of {} bytes (it holds {})", rec.type == kTypeA ? "A" : "AAAA",
                                            rdlength, size)};
            }
            break;
        }
        case kTypeCname:
        case kTypePtr:
        case kTypeNs:
            rec.target = r.name(rdata_end);
            if (r.pos() != rdata_end) throw Malformed{"bytes after the name in the RDATA"};
            break;
        case kTypeSoa:
            r.name(rdata_end);  // MNAME
            r.name(rdata_end);  // RNAME
            if (rdata_end - r.pos() != kSoaFixedSize) {
                throw Malformed{"an SOA record whose RDATA is not two names and 20 bytes"};
            }
            r.seek(rdata_end - 4);
            rec.soa_minimum = r.u32();
            break;
        default: break;
    }
    r.seek(rdata_end);
    return rec;
}

void read_records(Reader& r, std::size_t end, uint16_t count, const char* section, std::vector<Record>& out) {
    out.reserve(std::min<std::size_t>(count, (end - r.pos()) / (1 + kRecordFixedSize)));
    for (uint16_t i = 0; i < count; ++i) {
        try {
            out.push_back(read_record(r, end));
        } catch (const Malformed& e) {
            throw Malformed{fmt::format("{} {} of {}: {}", section, i + 1, count, e.what)};
        }
    }
}

// Appends `name` (presentation form) in wire form to `out`; the reason it cannot be one.
std::string encode_name(std::string_view name, std::string& out) {
    if (name.empty()) return "the name is empty";
    if (name == ".") {
        out += '\0';
        return {};
    }
    std::string label;
    std::size_t octets = 1;
    auto end_label = [&]() -> std::string {
        if (label.empty()) return fmt::format("\"{}\" has an empty label", name);
        if (label.size() > kMaxLabelOctets) return fmt::format("\"{}\" has a label longer than 63 octets", name);
        octets += 1 + label.size();
        if (octets > kMaxNameOctets) return fmt::format("\"{}\" is longer than 255 octets", name);
        out += static_cast<char>(label.size());
        out += label;
        label.clear();
        return {};
    };
    bool ended_by_dot = false;  // a final dot names the root: "example." is "example"
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        ended_by_dot = c == '.';
        if (c == '.') {
            if (auto err = end_label(); !err.empty()) return err;
            continue;
        }
        if (c != '\\') {
            label += c;
            continue;
        }
        if (i + 1 == name.size()) return fmt::format("\"{}\" ends in a lone backslash", name);
        const char next = name[i + 1];
        if (next >= '0' && next <= '9') {
            if (name.size() - i < 4) return fmt::format("\"{}\" has a \\DDD escape cut short", name);
            unsigned value = 0;
            for (std::size_t k = i + 1; k <= i + 3; ++k) {
                if (name[k] < '0' || name[k] > '9') return fmt::format("\"{}\" has a \\DDD escape cut short", name);
                value = value * 10 + static_cast<unsigned>(name[k] - '0');
            }
            if (value > 255) return fmt::format("\"{}\" has an escape over \\255", name);
            label += static_cast<char>(value);
            i += 3;
        } else {
            label += next;
            i += 1;
        }
    }
    if (!ended_by_dot) {
        if (auto err = end_label(); !err.empty()) return err;
    }
    out += '\0';
    return {};
}

}  // namespace

std::optional<std::string> build_query(uint16_t id, std::string_view name, uint16_t type, std::string* error) {
    std::string out;
    out += static_cast<char>(id >> 8);
    out += static_cast<char>(id & 0xFF);
    out += '\x01';  // RD: the server recurses for us
    out += '\x00';
    out += std::string{0, 1, 0, 0, 0, 0, 0, 0};  // one question, no records
    if (auto err = encode_name(name, out); !err.empty()) {
        if (error) *error = std::move(err);
        return std::nullopt;
    }
    out += static_cast<char>(type >> 8);
    out += static_cast<char>(type & 0xFF);
    out += static_cast<char>(kClassIn >> 8);
    out += static_cast<char>(kClassIn & 0xFF);
    return out;
}

std::optional<Message> parse_message(std::span<const unsigned char> wire, std::string* error) {
    if (wire.size() < kHeaderSize) {
        if (error) *error = fmt::format("{} bytes, shorter than a DNS header (12)", wire.size());
        return std::nullopt;
    }
    Reader r(wire);
    Message m;
    m.id = r.u16();
    const uint16_t flags = r.u16();
    m.response = flags & 0x8000;
    m.opcode = static_cast<uint8_t>(flags >> 11 & 0x0F);
    m.authoritative = flags & 0x0400;
    m.truncated = flags & 0x0200;
    m.recursion_desired = flags & 0x0100;
    m.recursion_available = flags & 0x0080;
    m.rcode = static_cast<uint8_t>(flags & 0x0F);
    const uint16_t qdcount = r.u16();
    const uint16_t ancount = r.u16();
    const uint16_t nscount = r.u16();
    r.u16();  // ARCOUNT: the additional section is not read
    const std::size_t end = wire.size();
    try {
        for (uint16_t i = 0; i < qdcount; ++i) {
            try {
                m.questions.push_back(read_question(r, end));
            } catch (const Malformed& e) {
                throw Malformed{fmt::format("question {} of {}: {}", i + 1, qdcount, e.what)};
            }
        }
        read_records(r, end, ancount, "answer", m.answers);
        read_records(r, end, nscount, "authority record", m.authority);
    } catch (const Malformed& e) {
        if (error) *error = e.what;
        return std::nullopt;
    }
    m.size = r.pos();
    return m;
}

bool same_name(std::string_view a, std::string_view b) { return iequals(a, b); }

std::string mismatch(const Message& reply, const Question& asked, std::optional<uint16_t> id) {
    if (!reply.response) return "a query, not a response";
    if (reply.opcode != 0) return fmt::format("opcode {}, not a standard query's response", reply.opcode);
    if (id && reply.id != *id) return fmt::format("id {}, not the query's {}", reply.id, *id);
    if (reply.questions.size() != 1) return fmt::format("{} questions, not the one asked", reply.questions.size());
    const Question& q = reply.questions.front();
    if (!same_name(q.name, asked.name) || q.type != asked.type || q.qclass != asked.qclass) {
        return fmt::format("it answers {} type {} class {}, not the question asked ({} type {})", q.name, q.type,
                           q.qclass, asked.name, asked.type);
    }
    return {};
}

std::string rcode_name(uint8_t rcode) {
    switch (rcode) {
        case 0: return "NOERROR";
        case 1: return "FORMERR";
        case 2: return "SERVFAIL";
        case 3: return "NXDOMAIN";
        case 4: return "NOTIMP";
        case 5: return "REFUSED";
        default: return fmt::format("rcode {}", rcode);
    }
}

Answers answers_to_question(const Message& reply, uint16_t type) {
    Answers found;
    if (reply.questions.empty()) return found;
    std::string_view current = reply.questions.front().name;
    uint32_t ttl = std::numeric_limits<uint32_t>::max();
    for (int hop = 0; hop <= kMaxCnameHops; ++hop) {
        for (const Record& rec : reply.answers) {
            if (rec.rclass == kClassIn && rec.type == type && same_name(rec.owner, current)) {
                found.records.push_back(&rec);
                ttl = std::min(ttl, rec.ttl);
            }
        }
        if (!found.records.empty()) break;
        auto cname = std::find_if(reply.answers.begin(), reply.answers.end(), [&](const Record& rec) {
            return rec.rclass == kClassIn && rec.type == kTypeCname && same_name(rec.owner, current);
        });
        if (cname == reply.answers.end()) break;
        ttl = std::min(ttl, cname->ttl);
        current = cname->target;
    }
    if (!found.records.empty()) found.ttl = ttl;
    return found;
}

uint32_t negative_ttl(const Message& reply) {
    for (const Record& rec : reply.authority) {
        if (rec.type == kTypeSoa && rec.rclass == kClassIn) return std::min(rec.ttl, rec.soa_minimum);
    }
    return 0;
}

}  // namespace smtpscreen::dns
