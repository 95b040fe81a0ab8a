// Fuzz target: dnsbl/dns_message.h. The input is a datagram from a DNS server, which the
// DNS client reads for DNSBL answers and verified client names. Beyond "no crash": a
// reply that parses was read whole and consistently (every cut of it is refused, each
// name it holds encodes back into a query and reads back the same), its records are what
// their types say, and what the client takes from it (the A, AAAA and PTR answers to
// its question, the negative TTL, whether it answers the question) agrees with the
// records. The input is also tried as a query name: a name build_query() takes reads
// back from the query in a form that builds the same query again.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "dnsbl/dns_message.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;

namespace {

constexpr uint32_t kMaxTtl = static_cast<uint32_t>(std::numeric_limits<int32_t>::max());

std::optional<dns::Message> parse(std::string_view bytes, std::string* error) {
    return dns::parse_message({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}, error);
}

// A name the parser produced is a name build_query() accepts, and the query's question
// reads back as the same text.
void check_name(const std::string& name, std::string_view in) {
    std::string error;
    auto query = dns::build_query(1, name, dns::kTypeA, &error);
    FUZZ_CHECK(query, "a parsed name does not encode: " + escaped(name) + " (" + error + ") from " + escaped(in));
    auto again = parse(*query, &error);
    FUZZ_CHECK(again && again->questions.size() == 1, "a built query does not parse: " + error);
    FUZZ_CHECK(again->questions[0].name == name,
               "name round trip: " + escaped(name) + " -> " + escaped(again->questions[0].name));
}

void check_answers(const dns::Message& m, uint16_t type, std::string_view in) {
    const auto found = dns::answers_to_question(m, type);
    for (const dns::Record* rec : found.records) {
        FUZZ_CHECK(rec >= m.answers.data() && rec < m.answers.data() + m.answers.size(),
                   "an answer that is not in the answer section from " + escaped(in));
        FUZZ_CHECK(rec->type == type && rec->rclass == dns::kClassIn, "an answer of another type or class");
        FUZZ_CHECK(found.ttl <= rec->ttl, "the answers' TTL is above one of theirs from " + escaped(in));
    }
    if (found.records.empty()) FUZZ_CHECK(found.ttl == 0, "a TTL for no answer");
    if (!m.questions.empty() && !found.records.empty()) {
        // The first answer's owner is the question's name or a CNAME target in the message.
        const std::string& owner = found.records.front()->owner;
        const bool from_question = dns::same_name(owner, m.questions.front().name);
        const bool from_cname = std::any_of(m.answers.begin(), m.answers.end(), [&](const dns::Record& r) {
            return r.type == dns::kTypeCname && r.rclass == dns::kClassIn && dns::same_name(r.target, owner);
        });
        FUZZ_CHECK(from_question || from_cname, "an answer owned by a name the question does not lead to: " +
                                                    escaped(owner) + " from " + escaped(in));
    }
}

void check_message(const dns::Message& m, std::string_view in) {
    FUZZ_CHECK(m.size >= 12 && m.size <= in.size(), "size out of range");
    const auto id = static_cast<uint16_t>(static_cast<unsigned char>(in[0]) << 8 | static_cast<unsigned char>(in[1]));
    FUZZ_CHECK(m.id == id, "id");
    FUZZ_CHECK(m.rcode <= 15 && m.opcode <= 15, "header fields");

    // Read whole: with the counts unchanged, every cut before the end of the last record
    // read must be refused. Every cut is tried for small replies, a few for large ones.
    std::string error;
    const std::size_t step = m.size > 600 ? m.size / 97 + 1 : 1;
    for (std::size_t len = 0; len < m.size; len += step) {
        FUZZ_CHECK(!parse(in.substr(0, len), &error), "a cut at " + std::to_string(len) + " of " +
                                                          std::to_string(m.size) + " parses: " + escaped(in));
        FUZZ_CHECK(!error.empty(), "refused without a reason");
    }
    FUZZ_CHECK(!parse(in.substr(0, m.size - 1), &error), "the cut just before the end parses");
    // The bytes after the sections are not read: any tail leaves the message the same.
    auto trimmed = parse(in.substr(0, m.size), &error);
    FUZZ_CHECK(trimmed && trimmed->size == m.size && trimmed->answers.size() == m.answers.size(),
               "the message without its additional section reads differently");

    for (const auto& q : m.questions) check_name(q.name, in);
    for (const auto* section : {&m.answers, &m.authority}) {
        for (const dns::Record& rec : *section) {
            check_name(rec.owner, in);
            FUZZ_CHECK(rec.ttl <= kMaxTtl, "a TTL with the top bit set was kept");
            if (rec.rclass != dns::kClassIn) continue;
            if (rec.type == dns::kTypeA) FUZZ_CHECK(rec.rdata.size() == 4, "an A record that is not 4 bytes");
            if (rec.type == dns::kTypeAaaa) FUZZ_CHECK(rec.rdata.size() == 16, "an AAAA record that is not 16 bytes");
            if (rec.type == dns::kTypeCname || rec.type == dns::kTypePtr || rec.type == dns::kTypeNs) {
                check_name(rec.target, in);
            } else {
                FUZZ_CHECK(rec.target.empty(), "a target for a record that has none");
            }
        }
    }

    check_answers(m, dns::kTypeA, in);
    check_answers(m, dns::kTypeAaaa, in);
    check_answers(m, dns::kTypePtr, in);
    const uint32_t negative = dns::negative_ttl(m);
    FUZZ_CHECK(negative <= kMaxTtl, "negative TTL");
    if (negative > 0) {
        FUZZ_CHECK(std::any_of(m.authority.begin(), m.authority.end(),
                               [&](const dns::Record& r) { return r.type == dns::kTypeSoa && r.ttl >= negative; }),
                   "a negative TTL without an SOA that allows it");
    }

    // A reply answers its own question exactly when it is a response to a standard query
    // with one question; another id, type or name is never its answer.
    if (!m.questions.empty()) {
        const dns::Question& q = m.questions.front();
        const bool answers = m.response && m.opcode == 0 && m.questions.size() == 1;
        FUZZ_CHECK(dns::mismatch(m, q, m.id).empty() == answers, "mismatch with its own question");
        FUZZ_CHECK(!dns::mismatch(m, q, static_cast<uint16_t>(m.id + 1)).empty(), "another id accepted");
        FUZZ_CHECK(!dns::mismatch(m, {q.name, static_cast<uint16_t>(q.type + 1), q.qclass}, std::nullopt).empty(),
                   "another type accepted");
        FUZZ_CHECK(!dns::mismatch(m, {q.name + "x", q.type, q.qclass}, std::nullopt).empty(), "another name accepted");
    }
}

// The input as a presentation-form name: what build_query() takes, it writes so that the
// name read back builds the very same query.
void check_query_name(std::string_view in) {
    if (in.size() > 1100) return;
    std::string error;
    auto query = dns::build_query(0xBEEF, in, dns::kTypePtr, &error);
    if (!query) {
        FUZZ_CHECK(!error.empty(), "a name refused without a reason");
        return;
    }
    FUZZ_CHECK(query->size() <= 12 + 255 + 4, "a query name over 255 octets: " + escaped(in));
    auto m = parse(*query, &error);
    FUZZ_CHECK(m && m->questions.size() == 1 && m->answers.empty() && !m->response && m->id == 0xBEEF,
               "a built query does not read back: " + error + " from " + escaped(in));
    FUZZ_CHECK(m->questions[0].type == dns::kTypePtr && m->questions[0].qclass == dns::kClassIn, "question type");
    FUZZ_CHECK(m->size == query->size(), "query size");
    auto again = dns::build_query(0xBEEF, m->questions[0].name, dns::kTypePtr, &error);
    FUZZ_CHECK(again && *again == *query, "the name read back builds another query: " + escaped(in) + " -> " +
                                              escaped(m->questions[0].name));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    std::string error;
    if (auto m = parse(in, &error)) {
        check_message(*m, in);
    } else {
        FUZZ_CHECK(!error.empty(), "refused without a reason: " + escaped(in));
    }
    check_query_name(in);
    return 0;
}
