// dnsbl/dns_message.h: queries built byte for byte, replies read whole, and every kind of
// broken reply refused with a reason (cut short, pointer loops, counts that lie, names
// too long, records of the wrong size), and replies to another question told apart.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dnsbl/dns_message.h"
#include "fixtures.h"

using namespace smtpscreen;
using namespace smtpscreen::dns;
using namespace smtpscreen::test;

namespace {

constexpr uint16_t kResponse = 0x8180;  // QR, RD, RA, NOERROR
constexpr unsigned kQuestionAt = 12;

std::optional<Message> parse(const std::string& bytes, std::string* error = nullptr) {
    std::string ignored;
    return parse_message({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()},
                         error ? error : &ignored);
}

std::string parse_error(const std::string& bytes) {
    std::string error;
    auto m = parse(bytes, &error);
    CHECK_MESSAGE(!m, "parsed although broken");
    return error;
}

// A listed DNSBL reply: two A records whose owners point back at the question.
std::string listed_reply() {
    DnsWire w;
    w.header(0x1234, kResponse, 1, 2).question("2.0.0.127.bl.example", kTypeA);
    w.pointer(kQuestionAt).record_head(kTypeA, 300).a_rdata(127, 0, 0, 2);
    w.pointer(kQuestionAt).record_head(kTypeA, 60).a_rdata(127, 0, 0, 4);
    return w.bytes;
}

std::string address(const Record* rec) {
    REQUIRE(rec->rdata.size() == 4);
    std::string out;
    for (unsigned char c : rec->rdata) out += (out.empty() ? "" : ".") + std::to_string(c);
    return out;
}

}  // namespace

TEST_CASE("dns build_query: a standard recursive query, byte for byte") {
    std::string error;
    auto q = build_query(0x1234, "2.0.0.127.bl.example", kTypeA, &error);
    REQUIRE(q);
    DnsWire expected;
    expected.header(0x1234, 0x0100, 1, 0).question("2.0.0.127.bl.example", kTypeA);
    CHECK(*q == expected.bytes);
    CHECK(build_query(0x1234, "2.0.0.127.bl.example.", kTypeA, &error) == q);  // a final dot is the same name
    CHECK(*build_query(7, ".", kTypePtr, &error) == DnsWire().header(7, 0x0100, 1, 0).question("", kTypePtr).bytes);
}

TEST_CASE("dns build_query: names that cannot be DNS names are refused with the reason") {
    std::string error;
    CHECK_FALSE(build_query(1, "", kTypeA, &error));
    CHECK(error == "the name is empty");
    CHECK_FALSE(build_query(1, "a..example", kTypeA, &error));
    CHECK(error == "\"a..example\" has an empty label");
    CHECK_FALSE(build_query(1, ".example", kTypeA, &error));
    CHECK_FALSE(build_query(1, std::string(64, 'a') + ".example", kTypeA, &error));
    CHECK(error.find("longer than 63") != std::string::npos);
    CHECK(build_query(1, std::string(63, 'a') + ".example", kTypeA, &error));
    // 4 labels of 63 (256 octets with the length octets) and the root: 257.
    std::string long_name =
        std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." + std::string(63, 'd');
    CHECK_FALSE(build_query(1, long_name, kTypeA, &error));
    CHECK(error.find("longer than 255") != std::string::npos);
    long_name.resize(long_name.size() - 2);  // 253 characters: 255 octets on the wire
    CHECK(build_query(1, long_name, kTypeA, &error));
    CHECK_FALSE(build_query(1, "a\\", kTypeA, &error));
    CHECK_FALSE(build_query(1, "a\\25", kTypeA, &error));
    CHECK_FALSE(build_query(1, "a\\256", kTypeA, &error));
}

TEST_CASE("dns names: escaped bytes survive a round trip, and a dot inside a label stays one label") {
    std::string error;
    auto q = build_query(9, "a\\.b\\032\\\\c.example", kTypePtr, &error);
    REQUIRE(q);
    DnsWire expected;
    expected.header(9, 0x0100, 1, 0).u8(6).raw("a.b \\c").u8(7).raw("example").u8(0).u16(kTypePtr).u16(kClassIn);
    CHECK(*q == expected.bytes);
    auto m = parse(*q);
    REQUIRE(m);
    REQUIRE(m->questions.size() == 1);
    CHECK(m->questions[0].name == "a\\.b\\032\\\\c.example");
    CHECK_FALSE(m->response);
    CHECK(m->recursion_desired);
    CHECK(m->id == 9);

    // Control and 8-bit bytes come out as \DDD.
    DnsWire w;
    w.header(1, kResponse, 1, 0).u8(3).raw(std::string("\x00\x7f\xff", 3)).u8(0).u16(kTypeA).u16(kClassIn);
    m = parse(w.bytes);
    REQUIRE(m);
    CHECK(m->questions[0].name == "\\000\\127\\255");
    CHECK(build_query(1, m->questions[0].name, kTypeA, &error)->substr(12, 5) ==
          std::string("\x03\x00\x7f\xff\x00", 5));
}

TEST_CASE("dns parse: a listed reply with compressed owners gives its addresses and the smallest TTL") {
    auto m = parse(listed_reply());
    REQUIRE(m);
    CHECK(m->id == 0x1234);
    CHECK(m->response);
    CHECK(m->rcode == kRcodeNoError);
    CHECK(m->recursion_available);
    CHECK_FALSE(m->truncated);
    CHECK(m->size == listed_reply().size());
    REQUIRE(m->answers.size() == 2);
    CHECK(m->answers[0].owner == "2.0.0.127.bl.example");
    CHECK(mismatch(*m, {"2.0.0.127.BL.Example", kTypeA}, 0x1234).empty());  // names compare without case
    auto found = answers_to_question(*m, kTypeA);
    REQUIRE(found.records.size() == 2);
    CHECK(address(found.records[0]) == "127.0.0.2");
    CHECK(address(found.records[1]) == "127.0.0.4");
    CHECK(found.ttl == 60);
    CHECK(answers_to_question(*m, kTypeAaaa).records.empty());
    CHECK(answers_to_question(*m, kTypeAaaa).ttl == 0);
}

TEST_CASE("dns parse: NXDOMAIN and an empty answer carry the SOA's negative TTL") {
    DnsWire w;
    w.header(1, 0x8183, 1, 0, 1).question("9.0.0.127.bl.example", kTypeA);
    // The zone's SOA: owner bl.example (a pointer into the question), TTL 900, MINIMUM 300.
    const unsigned zone_at = kQuestionAt + 10;  // past the labels "9", "0", "0", "127"
    w.pointer(zone_at).record_head(kTypeSoa, 900);
    DnsWire rdata;
    rdata.labels("ns")
        .pointer(zone_at)
        .labels("hostmaster")
        .pointer(zone_at)
        .u32(2026)
        .u32(3600)
        .u32(600)
        .u32(86400)
        .u32(300);
    w.u16(static_cast<unsigned>(rdata.bytes.size())).raw(rdata.bytes);
    auto m = parse(w.bytes);
    REQUIRE(m);
    CHECK(m->rcode == kRcodeNxDomain);
    REQUIRE(m->authority.size() == 1);
    CHECK(m->authority[0].owner == "bl.example");
    CHECK(m->authority[0].soa_minimum == 300);
    CHECK(negative_ttl(*m) == 300);
    CHECK(answers_to_question(*m, kTypeA).records.empty());

    // The SOA's own TTL wins when it is the smaller.
    w.bytes[w.bytes.size() - rdata.bytes.size() - 2 - 4 + 2] = 0;  // TTL 900 -> 132 (0x384 -> 0x084)
    m = parse(w.bytes);
    REQUIRE(m);
    CHECK(negative_ttl(*m) == 132);

    // No SOA: nothing to cache by.
    DnsWire bare;
    bare.header(1, 0x8183, 1, 0).question("9.0.0.127.bl.example", kTypeA);
    CHECK(negative_ttl(*parse(bare.bytes)) == 0);
}

TEST_CASE("dns parse: CNAME chains are followed from the question, in any order, at most 8 hops") {
    // RFC 2317: 4.3.2.1.in-addr.arpa CNAME 4.0-25.3.2.1.in-addr.arpa, whose PTR comes
    // first in the answer.
    DnsWire ok;
    ok.header(1, kResponse, 1, 2).question("4.3.2.1.in-addr.arpa", kTypePtr);
    const unsigned ptr_owner_at = static_cast<unsigned>(ok.bytes.size());
    ok.name("4.0-25.3.2.1.in-addr.arpa").record_head(kTypePtr, 50).u16(14).name("mail.example");
    ok.pointer(kQuestionAt).record_head(kTypeCname, 40).u16(2).pointer(ptr_owner_at);
    auto m = parse(ok.bytes);
    REQUIRE(m);
    auto found = answers_to_question(*m, kTypePtr);
    REQUIRE(found.records.size() == 1);
    CHECK(found.records[0]->target == "mail.example");
    CHECK(found.ttl == 40);  // the CNAME's TTL bounds the answer's

    // A chain of 9 CNAMEs is one too many; 8 are followed.
    for (int hops : {8, 9}) {
        DnsWire c;
        c.header(1, kResponse, 1, static_cast<unsigned>(hops + 1)).question("n0.example", kTypeA);
        for (int i = 0; i < hops; ++i) {
            const std::string next = "n" + std::to_string(i + 1) + ".example";
            DnsWire rdata;
            rdata.name(next);
            c.name("n" + std::to_string(i) + ".example").record_head(kTypeCname, 300);
            c.u16(static_cast<unsigned>(rdata.bytes.size())).raw(rdata.bytes);
        }
        c.name("n" + std::to_string(hops) + ".example").record_head(kTypeA, 300).a_rdata(127, 0, 0, 2);
        auto chain = parse(c.bytes);
        REQUIRE(chain);
        CHECK(answers_to_question(*chain, kTypeA).records.size() == (hops == 8 ? 1u : 0u));
    }

    // A CNAME loop ends at the hop limit with no answer.
    DnsWire loop;
    loop.header(1, kResponse, 1, 2).question("a.example", kTypeA);
    const unsigned b_at = static_cast<unsigned>(loop.bytes.size()) + 2 + 8 + 2;  // pointer, head, RDLENGTH
    loop.pointer(kQuestionAt).record_head(kTypeCname, 300).u16(11).name("b.example");
    loop.pointer(b_at).record_head(kTypeCname, 300).u16(2).pointer(kQuestionAt);
    m = parse(loop.bytes);
    REQUIRE(m);
    CHECK(m->answers[1].owner == "b.example");
    CHECK(answers_to_question(*m, kTypeA).records.empty());
}

TEST_CASE("dns parse: TTLs with the top bit set read as 0; other classes are kept but answer nothing") {
    DnsWire w;
    w.header(1, kResponse, 1, 2).question("x.example", kTypeA);
    w.pointer(kQuestionAt).record_head(kTypeA, 0x80000000u).a_rdata(127, 0, 0, 2);
    w.pointer(kQuestionAt).u16(kTypeA).u16(3).u32(60).u16(3).raw("abc");  // class CH: not an address
    auto m = parse(w.bytes);
    REQUIRE(m);
    CHECK(m->answers[0].ttl == 0);
    CHECK(m->answers[1].rdata == "abc");
    auto found = answers_to_question(*m, kTypeA);
    REQUIRE(found.records.size() == 1);
    CHECK(found.ttl == 0);
}

TEST_CASE("dns parse: every cut of a reply is refused, never half read") {
    const std::string whole = listed_reply();
    for (std::size_t len = 0; len < whole.size(); ++len) {
        CAPTURE(len);
        const std::string error = parse_error(whole.substr(0, len));
        CHECK(!error.empty());
    }
    CHECK(parse_error("") == "0 bytes, shorter than a DNS header (12)");
    CHECK(parse_error(whole.substr(0, whole.size() - 2)) ==
          "answer 2 of 2: the RDATA runs past the end of the message");
    CHECK(parse_error(whole.substr(0, 20)) == "question 1 of 1: a name runs past the end of the message");
    // Bytes after the last section (an additional section, or junk) are not read.
    auto m = parse(whole + "junk");
    REQUIRE(m);
    CHECK(m->size == whole.size());
}

TEST_CASE("dns parse: counts that promise more than the message holds are refused") {
    std::string r = listed_reply();
    r[7] = 3;  // ANCOUNT 3, two answers present
    CHECK(parse_error(r) == "answer 3 of 3: a name runs past the end of the message");
    r = listed_reply();
    r[5] = 2;  // QDCOUNT 2: the first answer is read as a question, the rest falls apart
    CHECK_FALSE(parse(r));
    r = listed_reply();
    r[9] = 1;  // NSCOUNT 1, no authority section
    CHECK(parse_error(r) == "authority record 1 of 1: a name runs past the end of the message");
    r = listed_reply();
    r[5] = 0;  // QDCOUNT 0: the question is read as an answer, whose "RDLENGTH" is 1
    CHECK(parse_error(r) == "answer 1 of 2: an A record of 1 bytes (it holds 4)");
}

TEST_CASE("dns parse: compression pointers must point back, so loops are impossible") {
    // A pointer to itself.
    DnsWire self;
    self.header(1, kResponse, 1, 0).pointer(kQuestionAt).u16(kTypeA).u16(kClassIn);
    CHECK(parse_error(self.bytes) ==
          "question 1 of 1: a compression pointer at offset 12 points to 12, not back to an earlier name");
    // Forward, to a name later in the message.
    DnsWire forward;
    forward.header(1, kResponse, 1, 0).pointer(18).u16(kTypeA).u16(kClassIn).name("x");
    CHECK(parse_error(forward.bytes).find("not back to an earlier name") != std::string::npos);
    // Two names that point at each other: the answer's owner points back into a label
    // run that itself ends in a pointer to the answer's owner.
    DnsWire pair;
    pair.header(1, kResponse, 1, 1);
    pair.labels("a").pointer(kQuestionAt + 2 + 2 + 4).u16(kTypeA).u16(kClassIn);  // points at the answer
    pair.pointer(kQuestionAt).record_head(kTypeA, 1).a_rdata(127, 0, 0, 2);
    CHECK(parse_error(pair.bytes).find("not back to an earlier name") != std::string::npos);
    // Back into the middle of the same run of labels: a -> b -> (pointer to a) loops.
    DnsWire run;
    run.header(1, kResponse, 1, 1).question("x.example", kTypeA);
    const unsigned owner_at = static_cast<unsigned>(run.bytes.size());
    run.labels("a.b").pointer(owner_at).record_head(kTypeA, 1).a_rdata(127, 0, 0, 2);
    CHECK(parse_error(run.bytes).find("answer 1 of 1: a compression pointer") == 0);
    // Back, but to labels that run on past the name that points to them (here: the
    // question's type 0x0A00 read as a 10-octet label that covers the pointer itself and
    // the record after it). Found by fuzz_dns_reply: the name was made of later bytes.
    DnsWire overlap;
    overlap.header(1, kResponse, 1, 1).name("hello").u16(0x0A00).u16(kClassIn);
    overlap.pointer(19).record_head(kTypeA, 1).a_rdata(127, 0, 0, 2);
    CHECK(parse_error(overlap.bytes) ==
          "answer 1 of 1: the labels at offset 19, reached by a compression pointer, run past the name that points to "
          "them");
    // A pointer cut short at the end of the message.
    DnsWire cut;
    cut.header(1, kResponse, 1, 0).u8(0xC0);
    CHECK(parse_error(cut.bytes) == "question 1 of 1: a compression pointer is cut short");
    // Extended label types (0x40, 0x80) do not exist any more.
    DnsWire ext;
    ext.header(1, kResponse, 1, 0).u8(0x41).u8(0).u16(kTypeA).u16(kClassIn);
    CHECK(parse_error(ext.bytes).find("a label of type 0x40") != std::string::npos);
}

TEST_CASE("dns parse: names over 255 octets are refused, also when pointers build them") {
    // In place: five labels of 63 and the root, 321 octets.
    DnsWire flat;
    flat.header(1, kResponse, 1, 0);
    for (int i = 0; i < 5; ++i) flat.u8(63).raw(std::string(63, 'a'));
    flat.u8(0).u16(kTypeA).u16(kClassIn);
    CHECK(parse_error(flat.bytes) == "question 1 of 1: a name is longer than 255 octets");
    // 255 octets exactly is a name.
    DnsWire max;
    max.header(1, kResponse, 1, 0);
    for (int i = 0; i < 3; ++i) max.u8(63).raw(std::string(63, 'a'));
    max.u8(61).raw(std::string(61, 'b')).u8(0).u16(kTypeA).u16(kClassIn);
    auto m = parse(max.bytes);
    REQUIRE(m);
    CHECK(m->questions[0].name.size() == 253);
    // Built by pointers: each answer owner adds a 63-octet label before a pointer to the
    // previous one; the fifth is 5 * 64 + the question's octets long.
    DnsWire chain;
    chain.header(1, kResponse, 1, 5).question("x", kTypeA);
    unsigned previous = kQuestionAt;
    for (int i = 0; i < 5; ++i) {
        const unsigned here = static_cast<unsigned>(chain.bytes.size());
        chain.u8(63)
            .raw(std::string(63, static_cast<char>('a' + i)))
            .pointer(previous)
            .record_head(kTypeA, 1)
            .a_rdata(1, 2, 3, 4);
        previous = here;
    }
    CHECK(parse_error(chain.bytes) == "answer 4 of 5: a name is longer than 255 octets");
}

TEST_CASE("dns parse: records whose RDATA is not what their type says are refused") {
    auto with_answer = [](uint16_t type, const std::string& rdata) {
        DnsWire w;
        w.header(1, kResponse, 1, 1).question("x.example", type);
        w.pointer(kQuestionAt).record_head(type, 60).u16(static_cast<unsigned>(rdata.size())).raw(rdata);
        return w.bytes;
    };
    CHECK(parse_error(with_answer(kTypeA, std::string("\x7f\x00\x00", 3))) ==
          "answer 1 of 1: an A record of 3 bytes (it holds 4)");
    CHECK(parse_error(with_answer(kTypeA, std::string("\x7f\x00\x00\x02\x00", 5))) ==
          "answer 1 of 1: an A record of 5 bytes (it holds 4)");
    CHECK(parse_error(with_answer(kTypeAaaa, std::string(4, '\0'))) ==
          "answer 1 of 1: an AAAA record of 4 bytes (it holds 16)");
    CHECK(parse(with_answer(kTypeAaaa, std::string(16, '\1'))));
    CHECK(parse_error(with_answer(kTypePtr, DnsWire().name("mail.example").bytes + "x")) ==
          "answer 1 of 1: bytes after the name in the RDATA");
    // A name in RDATA must end inside it, even when the message goes on.
    std::string ptr = with_answer(kTypePtr, DnsWire().name("mail.example").bytes);
    const std::size_t rdlength_at = ptr.size() - 14 - 2;
    ptr[rdlength_at + 1] = 10;  // RDLENGTH 10 of a 14-byte name
    ptr += "xxxx";
    CHECK(parse_error(ptr) == "answer 1 of 1: a name runs past the end of the RDATA");
    CHECK(parse_error(with_answer(kTypeSoa, DnsWire().name("ns").name("hm").u32(1).bytes)) ==
          "answer 1 of 1: an SOA record whose RDATA is not two names and 20 bytes");
    // An unknown type keeps its RDATA as it came.
    auto m = parse(with_answer(99, "anything"));
    REQUIRE(m);
    CHECK(m->answers[0].rdata == "anything");
}

TEST_CASE("dns mismatch: a reply to another question, id, or no reply at all") {
    auto m = parse(listed_reply());
    REQUIRE(m);
    const Question asked{"2.0.0.127.bl.example", kTypeA};
    CHECK(mismatch(*m, asked, std::nullopt).empty());
    CHECK(mismatch(*m, asked, 0x1234).empty());
    CHECK(mismatch(*m, asked, 0x1235) == "id 4660, not the query's 4661");
    CHECK(mismatch(*m, {"3.0.0.127.bl.example", kTypeA}, std::nullopt) ==
          "it answers 2.0.0.127.bl.example type 1 class 1, not the question asked (3.0.0.127.bl.example type 1)");
    CHECK_FALSE(mismatch(*m, {"2.0.0.127.bl.example", kTypeAaaa}, std::nullopt).empty());
    CHECK_FALSE(mismatch(*m, {"2.0.0.127.bl.example.evil", kTypeA}, std::nullopt).empty());

    std::string query = *build_query(0x1234, asked.name, kTypeA, nullptr);
    CHECK(mismatch(*parse(query), asked, 0x1234) == "a query, not a response");

    std::string r = listed_reply();
    r[2] = static_cast<char>(0x80 | 2 << 3);  // opcode 2 (STATUS)
    CHECK(mismatch(*parse(r), asked, std::nullopt) == "opcode 2, not a standard query's response");

    DnsWire none;
    none.header(0x1234, kResponse, 0, 0);
    CHECK(mismatch(*parse(none.bytes), asked, std::nullopt) == "0 questions, not the one asked");
}

TEST_CASE("dns rcode_name names the answers a DNSBL server gives") {
    CHECK(rcode_name(0) == "NOERROR");
    CHECK(rcode_name(2) == "SERVFAIL");
    CHECK(rcode_name(3) == "NXDOMAIN");
    CHECK(rcode_name(5) == "REFUSED");
    CHECK(rcode_name(9) == "rcode 9");
}
